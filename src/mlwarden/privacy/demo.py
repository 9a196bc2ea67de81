"""Privacy step of ``mlwarden demo``: a small membership-inference audit of the demo model.

The loss-threshold attack (Yeom et al., arXiv:1709.01604) and LiRA (Carlini et al.,
arXiv:2112.03570, offline-capable, global variance) with 4 shadow models, each a
``sklearn.base.clone`` of the demo's scikit-learn classifier refitted on a random
half of train ∪ test. Then the same audit on a text model: a TF-IDF + logistic-regression
pipeline trained on 400 of the bundled tweets, judged against 400 other tweets, with
LiRA's shadows cloned from the pipeline (``privacy_report``, the command's own path).
Kept under ~30 s on one core.
"""

from __future__ import annotations

from mlwarden.core.demo_context import DemoContext
from mlwarden.core.findings import Report
from mlwarden.core.target import SklearnTarget
from mlwarden.privacy.audit import (
    audit_membership,
    exposed_records,
    membership_findings,
    metrics_dict,
)
from mlwarden.privacy.metrics import roc_png
from mlwarden.privacy.shadows import SklearnRecipe

DEMO_SHADOWS = 4
#: Tweets the demo text model is trained on, and as many held out.
TEXT_RECORDS = 400


def run(ctx: DemoContext) -> Report:
    report = Report.new(command="privacy", seed=ctx.seed)
    target = SklearnTarget(ctx.sklearn_model, name=ctx.sklearn_path.name)
    report.target = target.describe()
    with report.timed("privacy.loss"):
        loss = audit_membership(target, ctx.train, ctx.test, attack="loss", seed=ctx.seed)
    with report.timed("privacy.lira"):
        lira = audit_membership(
            target,
            ctx.train,
            ctx.test,
            attack="lira",
            recipe=SklearnRecipe(ctx.sklearn_model),
            shadows=DEMO_SHADOWS,
            seed=ctx.seed,
        )
    report.metrics.update(metrics_dict(lira))
    report.metrics["loss"] = metrics_dict(loss)
    report.images["privacy_roc"] = roc_png({"loss": loss.metrics, "LiRA (4 shadows)": lira.metrics})
    report.artifacts["exposed_records"] = exposed_records(lira, top=10)
    report.add(*membership_findings(lira, artifact=str(ctx.sklearn_path)))
    report.merge(text_privacy(ctx), prefix="text")
    return report


def text_privacy(ctx: DemoContext) -> Report:
    """LiRA on a small tweet-sentiment pipeline, saved as joblib and loaded back through
    the scanner like any user model."""
    import joblib
    import numpy as np

    from mlwarden.core.data import load_dataset
    from mlwarden.core.textmodels import tfidf_pipeline
    from mlwarden.privacy.reports import privacy_report

    ds = load_dataset("tweets")
    order = np.random.default_rng(ctx.seed + 1).permutation(len(ds))
    train = ds.subset(order[:TEXT_RECORDS])
    holdout = ds.subset(order[TEXT_RECORDS : 2 * TEXT_RECORDS])
    art = ctx.out_dir / "artifacts"
    art.mkdir(parents=True, exist_ok=True)
    path = art / "tweets_privacy_tfidf.joblib"
    joblib.dump(tfidf_pipeline(train.x, train.y), path)
    report = privacy_report(
        str(path), train, holdout, attack="lira", shadows=DEMO_SHADOWS, seed=ctx.seed
    )
    report.images = {"text_privacy_roc": report.images.get("privacy_roc", "")}
    return report
