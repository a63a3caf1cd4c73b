"""Pipeline tasks, one subpackage per stage: data, features, training, evaluation, generation."""
