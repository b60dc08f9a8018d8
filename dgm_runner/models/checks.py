"""Type checks that objectives and samplers run on their model before training."""

from __future__ import annotations

from torch import nn


def require(model: nn.Module, cls: type, user: str) -> None:
    """Raise ``TypeError`` (one line) unless ``model`` is an instance of ``cls``.

    Args:
        model: the model to check.
        cls: the model class ``user`` needs.
        user: the component's name for the message (``"objective 'cd'"``).
    """
    if not isinstance(model, cls):
        raise TypeError(f"{user} needs a {cls.__name__} model, got {type(model).__name__}")


def require_attrs(model: nn.Module, attrs: tuple[str, ...], user: str) -> None:
    """Raise ``TypeError`` (one line) unless ``model`` has every attribute in ``attrs``
    (duck typing: e.g. score samplers accept any module with ``score`` and ``sde``)."""
    missing = [a for a in attrs if not hasattr(model, a)]
    if missing:
        raise TypeError(
            f"{user} needs a model with {', '.join(attrs)}; "
            f"{type(model).__name__} lacks {', '.join(missing)}"
        )


def require_images(image_shape: tuple[int, ...], model: str) -> tuple[int, int, int]:
    """``image_shape`` as ``(C, H, W)``, or ``ValueError`` (one line; a ConfigError once
    the runner builds the model) for data that are not images, e.g. ``dataset=toy2d``'s
    ``(D,)`` points.

    Args:
        image_shape: the shape of one example, set by the runner.
        model: the model's config name, for the message (``"model=rbm"``).
    """
    if len(image_shape) != 3:
        raise ValueError(
            f"{model} needs (C, H, W) images, got examples of shape {tuple(image_shape)} "
            "(a dataset of points?)"
        )
    c, h, w = (int(s) for s in image_shape)
    return c, h, w
