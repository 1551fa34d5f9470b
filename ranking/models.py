from django.db import models


class RankerVersion(models.Model):
    """A trained CTR reranker. The database is the source of truth: the fitted scikit-learn
    model and its feature list are stored here (joblib bytes); web processes load the live
    one from this row. At most one is live; none live means search keeps the visual order."""

    class Kind(models.TextChoices):
        LR = "lr", "Logistic regression"
        GBDT_LR = "gbdt_lr", "GBDT + LR (tree leaves one-hot, then logistic regression)"

    version = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    model = models.BinaryField(help_text="joblib dump of {'estimator': fitted sklearn model, 'features': [...]}")
    features = models.JSONField(default=list, help_text="feature names, in the model's column order")
    params = models.JSONField(default=dict, blank=True, help_text="training parameters")
    metrics = models.JSONField(
        default=dict, blank=True, help_text="offline metrics on the time-based test split (AUC, NDCG@10, sizes)"
    )
    is_live = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["is_live"], condition=models.Q(is_live=True), name="one_live_ranker"),
        ]

    def __str__(self) -> str:
        return self.version + (" (live)" if self.is_live else "")
