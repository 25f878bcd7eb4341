"""`python -m fbnet_tf.ablation`: the runs it plans, resuming, and tables whose cells are the runs' own numbers."""
import json

import numpy as np
import pytest

from fbnet_tf import ablation


def test_plan_covers_table2_and_the_baselines(tmp_path):
    runs = ablation.plan(tmp_path, seeds=3)
    assert len(ablation.TABLE2_ROWS) == 9 and len(runs) == (9 + 3) * 3
    assert runs[0].experiment == "no_coupling" and runs[0].run_dir == tmp_path / "no_coupling" / "seed0"
    with pytest.raises(ValueError, match="nonsense"):
        ablation.plan(tmp_path, 1, only=["nonsense"])


def test_cells_show_mean_and_sample_spread():
    assert ablation.cell([0.5]) == "0.500" and ablation.cell([]) == "-"
    assert ablation.cell([0.5, 0.7, 0.6]) == f"0.600 ± {np.std([0.5, 0.7, 0.6], ddof=1):.3f}"


def _records(folder, seed=0):
    """AffectNet-sourced (VA + expression) and DISFA-sourced (AU) tiny records with train/validation/test."""
    import cv2
    import tensorflow as tf

    from fbnet_tf.records import Sample, encode_example

    rng = np.random.default_rng(seed)
    for source in ("affectnet", "disfa"):
        directory = folder / source
        directory.mkdir(parents=True)
        for split, n in (("train", 12), ("validation", 4), ("test", 6)):
            with tf.io.TFRecordWriter(str(directory / f"{source}-{split}.tfrecord-00000-of-00001")) as writer:
                for i in range(n):
                    image = cv2.imencode(".png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))[1].tobytes()
                    labels = ({"va": tuple(rng.uniform(-1, 1, 2)), "expr": int(rng.integers(0, 7))}
                              if source == "affectnet" else
                              {"au": (rng.random(17) > 0.5).astype(np.float32), "au_mask": np.ones(17, np.float32)})
                    writer.write(encode_example(Sample(image, 40, 40, source, split, f"{split}/{i}", **labels)))
    return [str(folder / "affectnet"), str(folder / "disfa")]


@pytest.mark.slow
def test_two_experiments_two_seeds_then_resume(tmp_path, capsys):
    records = _records(tmp_path / "records")
    out = tmp_path / "ablation"
    args = ["--records", *records, "--out", str(out), "--seeds", "2", "--preset", "tiny",
            "--only", "no_coupling,single_task_va", "--set", "trainer.epochs=1", "--set", "data.batch_size=12",
            "--set", "data.validation=false", "--set", "trainer.verbose=0"]
    assert ablation.main(args) == 0
    values = [json.loads((out / "no_coupling" / f"seed{s}" / "evaluation.json").read_text())
              ["databases"]["affectnet"]["ccc_valence"] for s in (0, 1)]
    results = json.loads((out / "ablation.json").read_text())
    assert results["no_coupling"]["databases"]["affectnet"]["ccc_valence"] == pytest.approx(values)
    tables = (out / "tables.md").read_text()
    assert f"| no_coupling | {ablation.cell(values)} |" in tables
    # Table 4's single-task row takes VA from the VA baseline and leaves the AU column to the (absent) AU baseline
    baseline_va = results["single_task_va"]["databases"]["affectnet"]["ccc_valence"]
    assert f"| (3 x) single-task | {ablation.cell(baseline_va)} |" in tables
    assert (out / "ablation.png").stat().st_size > 0
    capsys.readouterr()
    assert ablation.main(args) == 0  # everything done: nothing retrained
    assert "4 runs, 4 already done" in capsys.readouterr().err


@pytest.mark.slow
def test_compound_records_add_table5s_zero_shot_and_fine_tuned_rows(tmp_path):
    from test_compound import _compound_records

    records = _records(tmp_path / "records")
    compound_records = _compound_records(tmp_path / "rafdb_compound", (("train", 22), ("test", 22)))
    out = tmp_path / "ablation"
    assert ablation.main(["--records", *records, "--out", str(out), "--seeds", "1", "--preset", "tiny",
                          "--only", "no_coupling", "--set", "trainer.epochs=1", "--set", "data.batch_size=12",
                          "--set", "data.validation=false", "--set", "trainer.verbose=0",
                          "--compound", str(compound_records), "--few-shot-epochs", "1"]) == 0
    run = out / "no_coupling" / "seed0"
    zero_shot = json.loads((run / "compound.json").read_text())["rafdb"]["mean_diagonal"]
    few_shot = json.loads((run / "few_shot" / "rafdb_compound" / "compound.json").read_text())
    assert few_shot["fine_tune"]["epochs"] == 1 and not few_shot["fine_tune"]["head_only"]
    tables = (out / "tables.md").read_text()
    assert f"| zero-shot, no_coupling | - | - | {ablation.cell([zero_shot])} |" in tables
    assert f"| fine-tuned, no_coupling | - | - | {ablation.cell([few_shot['rafdb']['mean_diagonal']])} |" in tables
