from emotalker.flows.demo import TABLE1_METRICS, standin_table1


def test_demo_labels_every_table1_number_as_stand_in_weights():
    assert TABLE1_METRICS == ("SSIM", "CPBD", "F-LMD", "M-LMD", "Sync", "EmoAcc")
    ev = {"SSIM": 0.51234, "CPBD": 0.3, "F-LMD": 7.0, "M-LMD": 8.0, "Sync": 1.5, "skipped": {"EmoAcc": "x"}}
    table = standin_table1(ev)
    assert table["SSIM"] == "0.5123 (computed with stand-in weights)"
    assert all("stand-in weights" in table[m] for m in TABLE1_METRICS[:-1])
    assert table["EmoAcc"] == "x"  # a metric the run could not compute keeps its reason


def test_demo_prints_table1_with_every_method_its_intervals_the_card_and_the_baselines():
    from emotalker.flows.demo import demo_summary
    from emotalker.tasks.evaluation.table1 import method_row

    names = ("EmoTalker (this run)", "real video", "copy reference", "mean motion", "SadTalker")
    clips = [{"clip_id": f"c{i}", "ssim": 0.5 + 0.1 * i, "emotion": "happy", "level": 1} for i in range(3)]
    rows = [method_row(f"{n} †", clips, ["c0", "c1", "c2"], resamples=100, seed=0) for n in names]
    ev = {"SSIM": 0.6, "LipL2": 0.5, "FaceL2": 1.0, "EmoAcc_stage1_head": 0.5, "copy_reference.LipL2": 1.0}
    ev |= {"table1": rows, "protocol_card": {"test_list_sha256": "abc"}, "standin_weights": ["renderer"]}
    text = demo_summary(ev, with_bfm=False)
    for n in names:
        line = next(x for x in text.splitlines() if x.startswith(f"{n} †"))
        assert "0.600 [" in line, line  # mean and 95% interval
    assert "test_list_sha256: abc" in text and "stand-in (random) weights: renderer" in text
    assert "baseline: copy the reference" in text and "LipL2 +50%" in text
    assert "ESR-9 classifier are randomly initialised" in text and "BFM" not in text.split("\n")[0]


def test_demo_prints_each_stages_time_and_share():
    from emotalker.flows.demo import demo_summary

    ev = {"LipL2": 0.5, "FaceL2": 1.0, "EmoAcc_stage1_head": 0.5}
    seconds = {"demo_data": 30.0, "prepare": 10.0, "evaluate": 60.0}
    last = demo_summary(ev, with_bfm=False, seconds=seconds).splitlines()[-1]
    assert (
        last == "Time by stage (total 100 s): demo_data 30 s (30%), prepare 10 s (10%), evaluate 60 s (60%)"
    )
    assert "Time by stage" not in demo_summary(ev, with_bfm=False)
