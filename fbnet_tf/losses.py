"""Masked multi-task losses (paper eq. 1) and the expression <-> AU coupling losses (co-annotation, soft
co-annotation, distribution matching; paper section 3 and shared/reference/relatedness.md).

Every function is plain TensorFlow on fixed-shape tensors, so it runs inside a compiled (`jit_compile=True`) train
step. Every term is masked: a batch with no image labelled for a task gives that term exactly 0 with finite
gradients (masked means divide by max(count, 1), never by 0).

Targets are the batch dict of the TFRecord contract: `expr` int [N] (-1 = no label), `va` [N, 2], `va_mask` [N],
`au` [N, 17], `au_mask` [N, 17]. Outputs are raw: `expression_logits` [N, 7], `au_logits` [N, 17],
`valence_arousal` [N, 2].
"""
from __future__ import annotations

import tensorflow as tf

from fbnet_tf import relatedness as _relatedness
from fbnet_tf.config import COUPLINGS
from fbnet_tf.labels import EXPRESSIONS

DM_VARIANTS = ("membership", "normalised", "weighted")
DM_FORMS = ("bernoulli", "literal")
_PROB_EPSILON = 1e-7  # q is clipped to [eps, 1 - eps] before its log


def global_sums(*sums):
    """Batch sums over the GLOBAL batch: inside `strategy.run` with several replicas (GPUs, workers), each
    replica's local sums all-reduced; elsewhere the sums as given. Every loss term is then the global batch's value
    on every replica, so 2 workers compute what 1 computes on the same batch. Differentiable: the gradient of an
    all-reduce sum is an all-reduce sum, which with each replica's loss divided by the number of replicas (as the
    trainers do) gives each replica the gradient of the global loss with respect to its own rows."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return sums
    return tuple(context.all_reduce(tf.distribute.ReduceOp.SUM, list(sums)))


def _masked_mean(values, weights):
    """sum(values * weights) / max(sum(weights), 1) over the global batch: 0, with zero gradient, when every weight
    is 0."""
    total, count = global_sums(tf.reduce_sum(values * weights), tf.reduce_sum(weights))
    return total / tf.maximum(count, 1.0)


def _basic_table(table) -> _relatedness.RelatednessTable:
    """A RelatednessTable over the 7 basic expressions, from a table, a built-in name or a path."""
    if not isinstance(table, _relatedness.RelatednessTable):
        table = _relatedness.load(table)
    if tuple(table.rows) != EXPRESSIONS:
        raise ValueError(f"relatedness table {table.name!r}: coupling needs rows = the 7 basic expressions "
                         f"{EXPRESSIONS}, got {len(table.rows)} rows {table.rows[:3]}...")
    return table


# ---------------------------------------------------------------- eq. 1: the three masked task losses

def expression_loss(expr, expression_logits, weights=None):
    """Cross-entropy averaged over the images with a label (expr >= 0).

    `weights` [N] (optional) scales each image's term (co-annotated labels); the mean still divides by the
    number of labelled images.
    """
    logits = tf.cast(expression_logits, tf.float32)
    expr = tf.cast(tf.reshape(expr, [-1]), tf.int32)
    labelled = expr >= 0
    per_image = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.where(labelled, expr, 0), logits=logits)
    count = tf.cast(labelled, tf.float32)
    scale = count if weights is None else count * tf.cast(tf.reshape(weights, [-1]), tf.float32)
    total, labelled_count = global_sums(tf.reduce_sum(per_image * scale), tf.reduce_sum(count))
    return total / tf.maximum(labelled_count, 1.0)


def au_loss(au, au_mask, au_logits, weights=None):
    """Binary cross-entropy of eq. 1: per image, the sum over its annotated AUs divided by their number (the
    paper's delta), averaged over the images with at least one annotated AU.

    `weights` [N, 17] (optional) scales each (image, AU) term, e.g. an observational AU co-annotated with its
    agreement w; the per-image normaliser stays the number of annotated AUs.
    """
    logits = tf.cast(au_logits, tf.float32)
    mask = tf.cast(tf.cast(au_mask, tf.float32) > 0, tf.float32)
    labels = tf.cast(au, tf.float32) * mask  # unannotated entries may hold anything; keep the BCE finite
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    scale = mask if weights is None else mask * tf.cast(weights, tf.float32)
    annotated = tf.reduce_sum(mask, axis=1)
    per_image = tf.reduce_sum(bce * scale, axis=1) / tf.maximum(annotated, 1.0)
    return _masked_mean(per_image, tf.cast(annotated > 0, tf.float32))


def batch_ccc(y_true, y_pred, mask):
    """CCC per column [D] over the rows with mask > 0 (population variances) of the global batch (see
    `global_sums`: two passes, the means first, then the centred sums). A zero denominator (fewer than 2 rows, or
    identical constants) gives 0 with finite gradients."""
    y_true, y_pred = tf.cast(y_true, tf.float32), tf.cast(y_pred, tf.float32)
    m = tf.cast(tf.reshape(mask, [-1, 1]) > 0, tf.float32)
    count, sum_true, sum_pred = global_sums(tf.reduce_sum(m), tf.reduce_sum(y_true * m, axis=0),
                                            tf.reduce_sum(y_pred * m, axis=0))
    n = tf.maximum(count, 1.0)
    mean_true, mean_pred = sum_true / n, sum_pred / n
    dev_true, dev_pred = (y_true - mean_true) * m, (y_pred - mean_pred) * m
    co, square_true, square_pred = global_sums(tf.reduce_sum(dev_true * dev_pred, axis=0),
                                               tf.reduce_sum(dev_true ** 2, axis=0),
                                               tf.reduce_sum(dev_pred ** 2, axis=0))
    covariance = co / n
    denominator = square_true / n + square_pred / n + (mean_true - mean_pred) ** 2
    return 2.0 * covariance / tf.maximum(denominator, 1e-8)


def va_loss(va, va_mask, valence_arousal):
    """1 - mean(CCC_valence, CCC_arousal) over the (global) batch's VA-labelled images; 0 when fewer than 2."""
    ccc = batch_ccc(va, valence_arousal, va_mask)
    labelled, = global_sums(tf.reduce_sum(tf.cast(tf.reshape(va_mask, [-1]) > 0, tf.float32)))
    return tf.where(labelled >= 2.0, 1.0 - tf.reduce_mean(ccc), 0.0)


# ---------------------------------------------------------------- coupling: soft co-annotation

SOFT_COANNOTATION_UNANNOTATED = ("absent", "ignore")


def soft_coannotation_scores(au, au_mask, table, reweight=True, unannotated="absent"):
    """[N, 7] pre-softmax scores: score(e) = sum_a w(e,a) y_a / sum_a w(e,a) over e's AUs among the 17 (w = 1
    without reweighting), e.g. happiness = (y12 + y25 + 0.51 y6) / 2.51. Neutral (no AUs) scores 0.

    An AU of e that the image does not annotate (mask 0):
    - unannotated="absent" (default, the paper's formula read literally): counts as y = 0 and keeps its weight in
      the denominator. A DISFA frame with AU4 + AU17 (DISFA never codes AU7, AU23, AU24) scores Anger
      (1 + 0.52) / 4.07 = 0.373 and Sadness (1 + 0.67) / 3.77 = 0.443 (AU11 is not among the 17).
    - unannotated="ignore": leaves it out of both the numerator and the denominator, so the score is the weighted
      fraction of e's *annotated* AUs that are active (that frame then scores Anger 1.0, as high as a full anger
      pattern); an expression none of whose AUs is annotated scores 0.
    """
    if unannotated not in SOFT_COANNOTATION_UNANNOTATED:
        raise ValueError(f"soft co-annotation unannotated={unannotated!r}: expected one of "
                         f"{SOFT_COANNOTATION_UNANNOTATED}")
    table = _basic_table(table)
    w = tf.constant(table.weights if reweight else table.membership, tf.float32)  # [7, A]
    mask = tf.cast(tf.cast(au_mask, tf.float32) > 0, tf.float32)
    active = tf.cast(au, tf.float32) * mask
    numerator = tf.matmul(active, w, transpose_b=True)
    if unannotated == "absent":
        denominator = tf.reduce_sum(w, axis=1)[None, :]  # [1, 7]: every AU of e, annotated or not
    else:
        denominator = tf.matmul(mask, w, transpose_b=True)
    return tf.math.divide_no_nan(numerator, denominator)


def soft_coannotation_targets(au, au_mask, table, temperature=1.0, reweight=True, unannotated="absent"):
    """[N, 7] soft expression targets: softmax(scores / temperature) (see `soft_coannotation_scores`)."""
    scores = soft_coannotation_scores(au, au_mask, table, reweight, unannotated)
    return tf.nn.softmax(scores / temperature, axis=-1)


def soft_coannotation_loss(au, au_mask, expression_logits, table, temperature=1.0, reweight=True,
                           unannotated="absent"):
    """Soft-target cross-entropy between the AU-derived soft labels and the predicted expressions, averaged over
    the images with at least one annotated AU."""
    targets = soft_coannotation_targets(au, au_mask, table, temperature, reweight, unannotated)
    per_image = tf.nn.softmax_cross_entropy_with_logits(labels=targets,
                                                        logits=tf.cast(expression_logits, tf.float32))
    has_au = tf.cast(tf.reduce_sum(tf.cast(au_mask, tf.float32), axis=1) > 0, tf.float32)
    return _masked_mean(per_image, has_au)


# ---------------------------------------------------------------- coupling: distribution matching

def _dm_matrix(table, variant):
    """[7, A] p(AU | e) for eq. 2."""
    if variant == "membership":  # the reading that gives q(AU25) = 1 when p(happiness) = 1
        return table.membership
    if variant == "normalised":  # q(AU2) = (p(surprise) + p(fear)) / 2: divide by the expressions sharing the AU
        sharing = table.membership.sum(axis=0, keepdims=True)
        return table.membership / (sharing + (sharing == 0))
    if variant == "weighted":  # footnote 3: p(AU | e) = w for observational AUs
        return table.weights
    raise ValueError(f"distribution matching variant {variant!r}: expected one of {DM_VARIANTS}")


def distribution_matching_q(expression_probs, table, variant="membership"):
    """[N, 17] q(AU | x) = sum_e p(e | x) p(AU | e) (eq. 2). AUs linked to no expression get q = 0."""
    matrix = tf.constant(_dm_matrix(_basic_table(table), variant), tf.float32)
    return tf.matmul(tf.cast(expression_probs, tf.float32), matrix)


def distribution_matching_loss(expression_probs, au_probs, table, variant="membership", form="bernoulli",
                               skip_unlinked=False):
    """Eq. 3 averaged over every image: per AU -(p log q + (1 - p) log(1 - q)) ("bernoulli", default) or only
    -p log q ("literal", eq. 3 as printed), summed over the 17 AUs.

    The Bernoulli cross-entropy is footnote 4's KL(p||q) *plus the entropy of p*, not KL alone: with gradients
    into p it also pushes each AU probability p towards 0 or 1. q is clipped to [1e-7, 1 - 1e-7];
    gradients reach both the expression head (through q) and the AU head (through p).

    An AU that the table links to no expression (AU14 in du2014) has q = 0, so the term pushes it towards 0 on
    every image (the paper's reading); `skip_unlinked=True` leaves such AUs out of the sum.
    """
    if form not in DM_FORMS:
        raise ValueError(f"distribution matching form {form!r}: expected one of {DM_FORMS}")
    table = _basic_table(table)
    q = tf.clip_by_value(distribution_matching_q(expression_probs, table, variant), _PROB_EPSILON,
                         1.0 - _PROB_EPSILON)
    p = tf.cast(au_probs, tf.float32)
    per_au = -p * tf.math.log(q)
    if form == "bernoulli":
        per_au -= (1.0 - p) * tf.math.log(1.0 - q)
    if skip_unlinked:
        per_au *= tf.constant(table.membership.max(axis=0), tf.float32)
    per_image = tf.reduce_sum(per_au, axis=1)
    return _masked_mean(per_image, tf.ones_like(per_image))


# ---------------------------------------------------------------- coupling: hard co-annotation

def coannotate_from_expression(expr, table):
    """(au targets, au mask, au weights), each [N, 17], from expression labels.

    An image labelled e gets e's prototypical AUs as positives of weight 1 and its observational AUs as positives
    of weight w; only those AUs are masked in. Unlabelled images (expr < 0) and neutral get an empty mask.
    """
    table = _basic_table(table)
    expr = tf.cast(tf.reshape(expr, [-1]), tf.int32)
    labelled = tf.cast(expr >= 0, tf.float32)[:, None]
    safe = tf.maximum(expr, 0)
    mask = tf.gather(tf.constant(table.membership, tf.float32), safe) * labelled
    weights = tf.gather(tf.constant(table.weights, tf.float32), safe) * labelled
    return mask, mask, weights


def coannotate_from_aus(au, au_mask, table, missing="absent"):
    """int32 [N] expression labels from AU labels (-1 when none qualifies).

    An expression qualifies when all its prototypical and observational AUs are present; when several qualify,
    the one with the most required AUs wins (a remaining tie goes to the earlier canonical expression). Neutral
    (no required AU) never qualifies. A required AU that this image does not annotate (mask 0):
    - missing="absent" (default): counts as not present, so the expression cannot be assigned: no evidence is
      not evidence of presence (EmotioNet, without AU15, never co-annotates sadness).
    - missing="ignore": the expression is judged on its annotated required AUs only (at least one of them must
      be annotated), and ties compare the numbers of those.
    """
    if missing not in ("absent", "ignore"):
        raise ValueError(f"coannotate_from_aus missing={missing!r}: expected 'absent' or 'ignore'")
    table = _basic_table(table)
    required = tf.constant(table.membership, tf.float32)  # [7, A]
    annotated = tf.cast(tf.cast(au_mask, tf.float32) > 0, tf.float32)
    present = tf.cast(tf.cast(au, tf.float32) >= 0.5, tf.float32) * annotated
    considered = annotated if missing == "ignore" else tf.ones_like(annotated)
    violations = tf.matmul(considered - present, required, transpose_b=True)  # required, considered, not present
    counted = tf.matmul(considered, required, transpose_b=True)  # required AUs that enter the decision
    qualifies = (violations < 0.5) & (counted > 0.5)
    # Unique score per expression: more required AUs first, then the earlier canonical index.
    order = tf.range(len(EXPRESSIONS), dtype=tf.float32)
    score = tf.where(qualifies, counted * len(EXPRESSIONS) - order, -1.0)
    best = tf.cast(tf.argmax(score, axis=1), tf.int32)
    return tf.where(tf.reduce_any(qualifies, axis=1), best, -1)


# ---------------------------------------------------------------- eq. 1 + coupling

class MultiTaskLoss:
    """L_MT = L_expr + lambda_au L_AU + lambda_va L_VA (eq. 1) + the chosen coupling terms.

    coupling:
    - "none": eq. 1 only.
    - "coannotation": expression-labelled images also enter L_AU with their expression's AUs, AU-labelled images
      also enter L_expr with the qualifying expression (`coannotate_from_expression` / `_from_aus`). Real labels
      win wherever both exist. The coupling weight scales the co-annotated contributions.
    - "soft_coannotation": + weight * soft-target CE on every AU-annotated image.
    - "distribution_matching": + weight * L_DM on every image.
    - "soft_coannotation+distribution_matching": both.
    `coupling_weight` is one float for every coupling term or a dict {term: float}. `relatedness` is a built-in
    table name, a table file or a RelatednessTable (whose config then records only its name). `temperature` and
    `reweight` shape the soft labels and `soft_coannotation_unannotated` says how an AU the image does not annotate
    enters them ("absent", default: y = 0 with its weight kept; "ignore": left out); `dm_variant`, `dm_form`,
    `dm_skip_unlinked` select the eq. 2 / eq. 3 readings; `coannotation_missing` is `coannotate_from_aus`'s rule
    for required AUs an image does not annotate.

    `__call__(targets, outputs)` returns {"loss": total, "expression", "au", "va", and one key per active
    coupling term}, each a scalar float32 tensor.
    """

    def __init__(self, lambda_au=1.0, lambda_va=1.0, coupling="none", relatedness="du2014", temperature=1.0,
                 reweight=True, dm_variant="membership", dm_form="bernoulli", coupling_weight=1.0,
                 coannotation_missing="absent", dm_skip_unlinked=False, soft_coannotation_unannotated="absent"):
        if coupling not in COUPLINGS:
            raise ValueError(f"MultiTaskLoss coupling={coupling!r}: expected one of {COUPLINGS}")
        if dm_variant not in DM_VARIANTS:
            raise ValueError(f"MultiTaskLoss dm_variant={dm_variant!r}: expected one of {DM_VARIANTS}")
        if dm_form not in DM_FORMS:
            raise ValueError(f"MultiTaskLoss dm_form={dm_form!r}: expected one of {DM_FORMS}")
        if coannotation_missing not in ("absent", "ignore"):
            raise ValueError(f"MultiTaskLoss coannotation_missing={coannotation_missing!r}: expected 'absent' "
                             f"or 'ignore'")
        if soft_coannotation_unannotated not in SOFT_COANNOTATION_UNANNOTATED:
            raise ValueError(f"MultiTaskLoss soft_coannotation_unannotated={soft_coannotation_unannotated!r}: "
                             f"expected one of {SOFT_COANNOTATION_UNANNOTATED}")
        self._couplings = () if coupling == "none" else tuple(coupling.split("+"))
        # Keys `__call__` adds beyond "loss", "expression", "au", "va" (co-annotation changes those, adds none).
        self.terms = tuple(t for t in self._couplings if t != "coannotation")
        if isinstance(coupling_weight, dict):
            unknown = set(coupling_weight) - set(COUPLINGS[1:4])
            if unknown:
                raise ValueError(f"MultiTaskLoss coupling_weight: unknown terms {sorted(unknown)}; expected keys "
                                 f"among {COUPLINGS[1:4]}")
            self.weights = {t: float(coupling_weight.get(t, 1.0)) for t in self._couplings}
        else:
            self.weights = {t: float(coupling_weight) for t in self._couplings}
        self.lambda_au, self.lambda_va = float(lambda_au), float(lambda_va)
        self.coupling, self.relatedness = coupling, relatedness
        self.temperature, self.reweight = float(temperature), bool(reweight)
        self.dm_variant, self.dm_form = dm_variant, dm_form
        self.coupling_weight = coupling_weight
        self.coannotation_missing = coannotation_missing
        self.dm_skip_unlinked = bool(dm_skip_unlinked)
        self.soft_coannotation_unannotated = soft_coannotation_unannotated
        self.table = _basic_table(relatedness) if self._couplings else None

    def __call__(self, targets, outputs):
        expr, au, au_mask = targets["expr"], targets["au"], targets["au_mask"]
        expr_logits, au_logits = outputs["expression_logits"], outputs["au_logits"]
        expr_weights = au_weights = None
        if "coannotation" in self._couplings:
            expr, expr_weights, au, au_mask, au_weights = self._coannotate(expr, au, au_mask)
        terms = {
            "expression": expression_loss(expr, expr_logits, expr_weights),
            "au": au_loss(au, au_mask, au_logits, au_weights),
            "va": va_loss(targets["va"], targets["va_mask"], outputs["valence_arousal"]),
        }
        total = terms["expression"] + self.lambda_au * terms["au"] + self.lambda_va * terms["va"]
        if "soft_coannotation" in self._couplings:
            terms["soft_coannotation"] = soft_coannotation_loss(
                targets["au"], targets["au_mask"], expr_logits, self.table, self.temperature, self.reweight,
                self.soft_coannotation_unannotated)
        if "distribution_matching" in self._couplings:
            terms["distribution_matching"] = distribution_matching_loss(
                tf.nn.softmax(tf.cast(expr_logits, tf.float32)), tf.sigmoid(tf.cast(au_logits, tf.float32)),
                self.table, self.dm_variant, self.dm_form, self.dm_skip_unlinked)
        for name in self.terms:
            total += self.weights[name] * terms[name]
        return {"loss": total, **terms}

    def _coannotate(self, expr, au, au_mask):
        """Labels with the co-annotations merged in; real labels win where both exist."""
        weight = self.weights["coannotation"]
        expr = tf.cast(tf.reshape(expr, [-1]), tf.int32)
        from_aus = coannotate_from_aus(au, au_mask, self.table, self.coannotation_missing)
        merged_expr = tf.where(expr >= 0, expr, from_aus)
        expr_weights = tf.where(expr >= 0, 1.0, weight)
        co_au, co_mask, co_weights = coannotate_from_expression(expr, self.table)
        real = tf.cast(tf.cast(au_mask, tf.float32) > 0, tf.float32)
        merged_au = real * tf.cast(au, tf.float32) + (1.0 - real) * co_au
        merged_mask = tf.maximum(real, co_mask)
        au_weights = real + (1.0 - real) * co_weights * weight
        return merged_expr, expr_weights, merged_au, merged_mask, au_weights

    def get_config(self):
        relatedness = self.relatedness
        if isinstance(relatedness, _relatedness.RelatednessTable):
            relatedness = relatedness.name  # a config should name a built-in table or a file
        return {"lambda_au": self.lambda_au, "lambda_va": self.lambda_va, "coupling": self.coupling,
                "relatedness": str(relatedness), "temperature": self.temperature, "reweight": self.reweight,
                "dm_variant": self.dm_variant, "dm_form": self.dm_form,
                "coupling_weight": self.coupling_weight, "coannotation_missing": self.coannotation_missing,
                "dm_skip_unlinked": self.dm_skip_unlinked,
                "soft_coannotation_unannotated": self.soft_coannotation_unannotated}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
