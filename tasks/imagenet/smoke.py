"""The ImageNet classifier's smoke test: the classifier's (served vs offline), without an accuracy (no labels)."""

from __future__ import annotations

from fpgaflow.tasks.deployment.smoke import SmokeResult, smoke_test


class UnlabelledSmokeResult(SmokeResult):
    def summary(self) -> dict:
        return {key: value for key, value in super().summary().items() if key != "accuracy"}


def imagenet_smoke_test(*args, **kwargs) -> UnlabelledSmokeResult:
    return UnlabelledSmokeResult.model_validate(smoke_test(*args, **kwargs).model_dump())


def smoke_caption(result: SmokeResult) -> str:
    return f"top-1 agreement with the offline service {result.top1_agreement:.0%}"
