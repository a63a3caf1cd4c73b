"""Generation stage: load trained stages and animate a reference face from speech."""
