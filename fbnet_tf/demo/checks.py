"""Is the demo world learnable, and does relatedness hold? Checks that read the written raw trees back.

- `expression_check`: logistic regression on downsampled grey pixels of AffectNet faces aligned with the CSV's own
  landmarks (train on training.csv, score on validation.csv) and of RAF-DB's aligned crops (train -> test).
- `au_check`: one logistic regression per Aff-Wild2 AU on the aligned crops, cross-validated over videos.
- `relatedness_check`: the table `fbnet_tf.relatedness.infer` recovers from Aff-Wild2's frames labelled with both
  an expression and AUs, against the Du et al. table the world was rendered from.
- `attribute_check`: one logistic regression per CelebA attribute of FATAUVA-Net's Table 2 on the face square of
  the aligned CelebA images (train partition -> validation + test).
"""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from fbnet_tf import relatedness
from fbnet_tf.face import align, landmarks68_to_5
from fbnet_tf.labels import AUS, EXPRESSIONS, expression_index
from fbnet_tf.demo.attributes import TABLE2
from fbnet_tf.demo.writers import ABAW_AUS, AFFECTNET_CODES, CELEBA_SIZE, RAF_BASIC, celeba_points

_PIXELS = 24  # side of the downsampled grey crop the classifiers see


def _features(rgb_or_bgr: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(rgb_or_bgr, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (_PIXELS, _PIXELS), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return (small - small.mean()) / (small.std() + 1e-6)


def read_affectnet(root) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (features [N, P], canonical expression [N])} for rows with one of the 7 basic expressions."""
    root = Path(root)
    out = {}
    for split in ("training", "validation"):
        x, y = [], []
        with open(root / "Manually_Annotated_file_lists" / f"{split}.csv", newline="") as f:
            for row in csv.DictReader(f):
                code = int(row["expression"])
                index = expression_index(AFFECTNET_CODES[code]) if code < 7 else None
                if index is None:
                    continue
                image = cv2.imread(str(root / "Manually_Annotated_Images" / row["subDirectory_filePath"]))
                points = np.array(row["facial_landmarks"].split(";"), np.float32).reshape(68, 2)
                x.append(_features(align(image, landmarks68_to_5(points), 112)))
                y.append(index)
        out[split] = (np.stack(x).reshape(len(x), -1), np.array(y))
    return out


def read_rafdb(root) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{train/test: (features, canonical expression)} from RAF-DB basic's aligned crops."""
    root = Path(root) / "basic"
    data: dict[str, tuple[list, list]] = {"train": ([], []), "test": ([], [])}
    for line in (root / "EmoLabel" / "list_patition_label.txt").read_text().splitlines():
        name, code = line.split()
        stem = name.rsplit(".", 1)[0]
        image = cv2.imread(str(root / "Image" / "aligned" / f"{stem}_aligned.jpg"))
        x, y = data[name.split("_")[0]]
        x.append(_features(image).reshape(-1))
        y.append(expression_index(RAF_BASIC[int(code) - 1]))
    return {split: (np.stack(x), np.array(y)) for split, (x, y) in data.items()}


def read_affwild2(root, features: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """{Train_Set/Validation_Set: {"x", "expr", "au" [N, 12], "video"}} over frames with an image and both an EXPR
    and an AU row (missing codes become -1)."""
    root = Path(root)
    out = {}
    for split in ("Train_Set", "Validation_Set"):
        x, expr, au, video = [], [], [], []
        for au_file in sorted((root / "AU_Detection_Challenge" / split).glob("*.txt")):
            au_rows = np.loadtxt(au_file, delimiter=",", skiprows=1, ndmin=2)
            expr_file = root / "EXPR_Recognition_Challenge" / split / au_file.name
            expr_rows = (np.loadtxt(expr_file, skiprows=1, ndmin=1).astype(int) if expr_file.is_file()
                         else np.full(len(au_rows), -1))
            for t in range(min(len(au_rows), len(expr_rows))):
                image = root / "cropped_aligned" / au_file.stem / f"{t + 1:05d}.jpg"
                if not image.is_file():
                    continue
                x.append(_features(cv2.imread(str(image))).reshape(-1) if features else np.zeros(1))
                expr.append(expr_rows[t] if 0 <= expr_rows[t] < 7 else -1)
                au.append(au_rows[t])
                video.append(au_file.stem)
        out[split] = {"x": np.stack(x), "expr": np.array(expr), "au": np.stack(au), "video": np.array(video)}
    return out


def read_celeba(root) -> dict[str, tuple[np.ndarray, np.ndarray, tuple]]:
    """{train/heldout: (features of the face square, attribute values 0/1 [N, 40], the 40 names)} from the
    release's own files; heldout = validation + test partitions."""
    root = Path(root)
    lines = (root / "Anno" / "list_attr_celeba.txt").read_text().splitlines()
    names = tuple(lines[1].split())
    partition = dict(line.split() for line in (root / "Eval" / "list_eval_partition.txt").read_text().splitlines())
    points = celeba_points()
    eyes, mouth = points[:2].mean(axis=0), points[3:].mean(axis=0)
    side = int(round(2.2 * (mouth[1] - eyes[1])))  # the face from brows to chin
    top, left = int(round(eyes[1] - 0.42 * side)), int(round(eyes[0] - side / 2))
    assert 0 <= top and top + side <= CELEBA_SIZE[0] and 0 <= left and left + side <= CELEBA_SIZE[1]
    data: dict[str, tuple[list, list]] = {"train": ([], []), "heldout": ([], [])}
    for line in lines[2:]:
        name, *values = line.split()
        image = cv2.imread(str(root / "Img" / "img_align_celeba" / name))
        x, y = data["train" if partition[name] == "0" else "heldout"]
        x.append(_features(image[top:top + side, left:left + side]).reshape(-1))
        y.append([v == "1" for v in values])
    return {split: (np.stack(x), np.array(y, np.int64), names) for split, (x, y) in data.items()}


def attribute_check(celeba: dict) -> dict:
    """Per Table 2 attribute: held-out accuracy of a logistic regression on pixels vs. the majority answer."""
    (x_train, y_train, names), (x_test, y_test, _) = celeba["train"], celeba["heldout"]
    result = {}
    for name in TABLE2:
        j = names.index(name)
        majority = int(y_train[:, j].mean() >= 0.5)
        if y_train[:, j].min() == y_train[:, j].max():
            predicted = np.full(len(y_test), majority)
        else:
            predicted = _logistic().fit(x_train, y_train[:, j]).predict(x_test)
        result[name] = {"accuracy": float(np.mean(predicted == y_test[:, j])),
                        "majority_accuracy": float(np.mean(y_test[:, j] == majority)),
                        "positive_rate": float(y_train[:, j].mean())}
    return result


def _logistic():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=300))


def expression_check(x_train, y_train, x_test, y_test) -> dict:
    """Accuracy and macro-F1 of logistic regression vs. the majority class and uniform guessing."""
    from sklearn.metrics import accuracy_score, f1_score

    model = _logistic().fit(x_train, y_train)
    predicted = model.predict(x_test)
    majority = np.bincount(y_train).argmax()
    return {"n_train": len(y_train), "n_test": len(y_test), "accuracy": float(accuracy_score(y_test, predicted)),
            "macro_f1": float(f1_score(y_test, predicted, average="macro")),
            "majority_accuracy": float(np.mean(y_test == majority)), "uniform_accuracy": 1 / len(EXPRESSIONS)}


def au_check(frames: dict, folds: int = 4) -> dict:
    """Per-AU F1 of a logistic regression, cross-validated over videos (GroupKFold: no video is in both the
    training and the scored part), vs. the F1 of always answering "present" (the chance baseline)."""
    from sklearn.metrics import f1_score
    from sklearn.model_selection import GroupKFold

    x, labels, videos = frames["x"], frames["au"], frames["video"]
    result = {}
    for j, au in enumerate(ABAW_AUS):
        keep = labels[:, j] >= 0
        y = labels[keep, j].astype(int)
        if y.sum() < 10:
            continue
        predicted = np.zeros_like(y)
        for train, test in GroupKFold(folds).split(x[keep], y, videos[keep]):
            if y[train].min() == y[train].max():
                predicted[test] = y[train][0]
                continue
            predicted[test] = _logistic().fit(x[keep][train], y[train]).predict(x[keep][test])
        prior = y.mean()
        result[f"AU{au}"] = {"f1": float(f1_score(y, predicted)), "always_present_f1": float(2 * prior / (1 + prior)),
                             "positives": int(y.sum())}
    return result


def relatedness_check(affwild2: dict) -> dict:
    """The inferred table vs. Du et al. over the 12 Aff-Wild2 AUs: mean/max |w| difference and link agreement."""
    expr = np.concatenate([affwild2[s]["expr"] for s in affwild2])
    native = np.concatenate([affwild2[s]["au"] for s in affwild2])
    au = np.zeros((len(expr), len(AUS)), np.float32)
    mask = np.zeros_like(au)
    for j, number in enumerate(ABAW_AUS):
        au[:, AUS.index(number)] = np.clip(native[:, j], 0, 1)
        mask[:, AUS.index(number)] = native[:, j] >= 0
    inferred = relatedness.infer(expr, au, mask, min_support=20, min_weight=0.15)
    reference = relatedness.load("du2014")
    columns = [AUS.index(a) for a in ABAW_AUS]
    rows = [EXPRESSIONS.index(e) for e in EXPRESSIONS if e != "Neutral"]
    difference = np.abs(inferred.weights - reference.weights)[np.ix_(rows, columns)]
    agree = (inferred.membership == reference.membership)[np.ix_(rows, columns)]
    return {"frames": int((expr >= 0).sum()), "mean_abs_weight_difference": float(difference.mean()),
            "max_abs_weight_difference": float(difference.max()), "link_agreement": float(agree.mean()),
            "inferred": inferred.entries()}


def run_all(root) -> dict:
    """Every check whose release `root` holds (affectnet/, rafdb/, affwild2/, celeba/); raises when none is there."""
    root = Path(root)
    results = {}
    if (root / "affectnet").is_dir():
        affectnet = read_affectnet(root / "affectnet")
        results["expression_affectnet"] = expression_check(*affectnet["training"], *affectnet["validation"])
    if (root / "rafdb").is_dir():
        rafdb = read_rafdb(root / "rafdb")
        results["expression_rafdb"] = expression_check(*rafdb["train"], *rafdb["test"])
    if (root / "affwild2").is_dir():
        affwild2 = read_affwild2(root / "affwild2")
        results["au_affwild2"] = au_check({key: np.concatenate([affwild2[s][key] for s in affwild2])
                                           for key in ("x", "au", "video")})
        results["relatedness_affwild2"] = relatedness_check(affwild2)
    if (root / "celeba").is_dir():
        results["attributes_celeba"] = attribute_check(read_celeba(root / "celeba"))
    if not results:
        raise FileNotFoundError(f"{root} holds none of affectnet/, rafdb/, affwild2/, celeba/: nothing to check")
    return results


def format_report(results: dict) -> str:
    """The checks as plain-text tables."""
    lines = []
    expressions = [(key, name) for key, name in (("expression_affectnet", "AffectNet"), ("expression_rafdb", "RAF-DB"))
                   if key in results]
    if expressions:
        lines += ["expression (logistic regression on 24x24 grey pixels of aligned faces)",
                  f"  {'data':<12}{'train':>7}{'test':>7}{'accuracy':>10}{'macro-F1':>10}{'majority':>10}"
                  f"{'uniform':>9}"]
    for key, name in expressions:
        r = results[key]
        lines.append(f"  {name:<12}{r['n_train']:>7}{r['n_test']:>7}{r['accuracy']:>10.3f}{r['macro_f1']:>10.3f}"
                     f"{r['majority_accuracy']:>10.3f}{r['uniform_accuracy']:>9.3f}")
    if "au_affwild2" in results:
        lines += ["AUs on Aff-Wild2 (F1, cross-validated over videos)",
                  f"  {'AU':<6}{'F1':>7}{'chance F1':>11}{'positives':>11}"]
        for au, r in results["au_affwild2"].items():
            lines.append(f"  {au:<6}{r['f1']:>7.3f}{r['always_present_f1']:>11.3f}{r['positives']:>11}")
        f1 = np.mean([r["f1"] for r in results["au_affwild2"].values()])
        chance = np.mean([r["always_present_f1"] for r in results["au_affwild2"].values()])
        lines.append(f"  {'mean':<6}{f1:>7.3f}{chance:>11.3f}")
        r = results["relatedness_affwild2"]
        lines += ["relatedness inferred from Aff-Wild2 frames vs. du2014 (12 AUs x 6 expressions)",
                  f"  frames {r['frames']}, mean |dw| {r['mean_abs_weight_difference']:.3f}, "
                  f"max |dw| {r['max_abs_weight_difference']:.3f}, links agreeing {r['link_agreement']:.1%}"]
    if "attributes_celeba" in results:
        lines += ["CelebA attributes of Table 2 (logistic regression on 24x24 grey pixels of the face square, "
                  "train -> validation + test)", f"  {'attribute':<21}{'accuracy':>9}{'majority':>10}{'positive':>10}"]
        for name, r in results["attributes_celeba"].items():
            lines.append(f"  {name:<21}{r['accuracy']:>9.3f}{r['majority_accuracy']:>10.3f}{r['positive_rate']:>10.3f}")
        values = list(results["attributes_celeba"].values())
        lines.append(f"  {'mean':<21}{np.mean([r['accuracy'] for r in values]):>9.3f}"
                     f"{np.mean([r['majority_accuracy'] for r in values]):>10.3f}")
    return "\n".join(lines)
