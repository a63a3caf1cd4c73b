from emotalker.flows.demo import TABLE1_METRICS, standin_table1


def test_demo_labels_every_table1_number_as_stand_in_weights():
    assert TABLE1_METRICS == ("SSIM", "CPBD", "F-LMD", "M-LMD", "Sync", "EmoAcc")
    ev = {"SSIM": 0.51234, "CPBD": 0.3, "F-LMD": 7.0, "M-LMD": 8.0, "Sync": 1.5, "skipped": {"EmoAcc": "x"}}
    table = standin_table1(ev)
    assert table["SSIM"] == "0.5123 (computed with stand-in weights)"
    assert all("stand-in weights" in table[m] for m in TABLE1_METRICS[:-1])
    assert table["EmoAcc"] == "x"  # a metric the run could not compute keeps its reason
