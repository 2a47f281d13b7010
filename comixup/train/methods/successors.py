"""Co-Mixup's successors as training methods: SaliencyMix, FMix, ResizeMix and GuidedMixup (AP and
SR), each with its paper's CIFAR defaults as flags (:class:`~comixup.train.methods.base.MethodFlag`)
and each official code's departures one flag away."""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from comixup.core.lifecycle import str2bool
from comixup.mixing import fmix, guided, resizemix, saliencymix
from comixup.mixing.base import Mixer, check_bool, check_choice, check_float
from comixup.train.methods.base import FigureSettings, Method, MethodFlag, MixResult, StepResult, _loss, pair_shares
from comixup.train.methods.baselines import _MixedInputMethod
from comixup.train.methods.saliency import _SaliencyMethod

__all__ = ["SaliencyMixMethod", "FMixMethod", "ResizeMixMethod", "GuidedMixupAPMethod", "GuidedMixupSRMethod"]


def _probability(name: str, value: Any) -> float:
    return check_float(name, value, minimum=0, maximum=1)


def _scale_range(name: str, value: Any) -> tuple[float, float]:
    """ResizeMix's scope: two shares of the image side, LOW <= HIGH, within [0, 1]."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise TypeError(f"{name} takes two numbers, LOW HIGH, got {value!r}")
    low, high = (check_float(name, part, minimum=0, maximum=1) for part in value)
    if low > high:
        raise ValueError(f"{name} must be LOW HIGH with LOW <= HIGH, got {low} {high}")
    return low, high


_SALMIX_PROB = MethodFlag(
    "salmix_prob", 0.5, "probability that a batch is mixed; the others train on clean images (the official "
    "--salmix_prob)", check=_probability, metavar="P", in_figure=False)
_SALMIX_DETECTOR_INPUT = MethodFlag(
    "salmix_detector_input", "uint8", "what OpenCV's saliency detector reads: uint8 = the decoded image in BGR "
    "order, what the detector is made for; normalised = the normalised float image, as the official code passes it "
    "(the detector misreads it, so the box lands about at random)",
    check=lambda name, value: check_choice(name, value, saliencymix.DETECTOR_INPUTS), type=str,
    choices=saliencymix.DETECTOR_INPUTS)
_FMIX_DECAY_POWER = MethodFlag(
    "fmix_decay_power", 3.0, "decay d of the random spectrum, 1 / f^d: larger values give smoother masks",
    check=lambda name, value: check_float(name, value, minimum=0), metavar="D")
_FMIX_MAX_SOFT = MethodFlag(
    "fmix_max_soft", 0.0, "share of the pixels on each side of the mask's threshold that ramp from 1 to 0, "
    "in [0, 0.5] (0: binary masks)", check=lambda name, value: check_float(name, value, minimum=0, maximum=0.5),
    metavar="S")
_FMIX_SPECTRUM = MethodFlag(
    "fmix_spectrum", "isotropic", "isotropic = the paper's spectrum; published = the official make_low_freq_image's, "
    "which keeps only the horizontal frequencies 0 and 1/W (vertical bands)",
    check=lambda name, value: check_choice(name, value, fmix.SPECTRA), type=str, choices=fmix.SPECTRA)
_RESIZEMIX_SCOPE = MethodFlag(
    "resizemix_scope", (0.1, 0.8), "range of the scale rate tau: the partner image is shrunk to a box of "
    "int(side x tau) pixels", check=_scale_range, nargs=2, metavar=("LOW", "HIGH"))
_RESIZEMIX_USE_ALPHA = MethodFlag(
    "resizemix_use_alpha", False, "True: tau ~ Beta(a, a), a = --mixup_alpha (then default 1.0), drawn again "
    "uniformly over the scope when outside it, as OpenMixup's CIFAR configuration; False: tau uniform over the "
    "scope, as the paper", check=check_bool, type=str2bool, metavar="BOOL")
_GUIDED_MIX_PROB_AP = MethodFlag(
    "mix_prob", 0.8, "probability that a batch is mixed; the others train on clean images, without guided_ap's "
    "saliency pass (the released code's --mix_prob)", check=_probability, metavar="P", in_figure=False)
_GUIDED_MIX_PROB_SR = replace(_GUIDED_MIX_PROB_AP, default=0.5)
_GUIDED_PAIRING = MethodFlag(
    "guided_pairing", "greedy", "greedy = the paper's farthest-neighbour cycle over the saliency maps; random = a "
    "random permutation, which is what the released CIFAR code runs",
    check=lambda name, value: check_choice(name, value, guided.PAIRINGS), type=str, choices=guided.PAIRINGS)


class _SuccessorMethod(_MixedInputMethod):
    """A successor without a clean pass: ``mixer`` mixes the inputs, one forward pass follows."""

    def __init__(self, num_classes: int, mixer: Mixer, loss: str = "bce") -> None:
        super().__init__(num_classes, loss)
        self.mixer = mixer

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.mixer!r}, num_classes={self.num_classes}, loss={self.loss!r})"


class SaliencyMixMethod(_SuccessorMethod):
    """SaliencyMix (Uddin et al., "SaliencyMix: A Saliency Guided Data Augmentation Strategy for Better
    Regularization", ICLR 2021): with probability --salmix_prob, CutMix with the box centred on the
    saliency peak of one permuted image (OpenCV's fine-grained detector), lam ~ Beta(--mixup_alpha,
    --mixup_alpha) (the official --beta); :class:`saliencymix.SaliencyMix`."""

    name = "saliencymix"
    title = "SaliencyMix"
    published_mixup_alpha = 1.0
    flags = (_SALMIX_PROB, _SALMIX_DETECTOR_INPUT)
    flag_group = "SaliencyMix"
    figure_outline = "box"

    @classmethod
    def missing_requirement(cls) -> str | None:
        try:
            saliencymix.require_saliency_detector()
        except saliencymix.OpenCVContribMissing as err:
            return str(err)
        return None

    @classmethod
    def from_args(cls, args: Any, num_classes: int, dataset_info: Any, executor: Executor | None) -> Method:
        normalisation = {} if dataset_info is None else {"mean": dataset_info.mean, "std": dataset_info.std}
        mixer = saliencymix.SaliencyMix(prob=cls.setting(args, "salmix_prob"),
                                        beta=cls.published_setting(args, "mixup_alpha"),
                                        detector_input=cls.setting(args, "salmix_detector_input"),
                                        num_classes=num_classes, **normalisation)
        return cls(num_classes, mixer, _loss(args))

    @classmethod
    def name_part(cls, args: Any) -> str:
        part = f"{super().name_part(args)}_prob_{cls.setting(args, 'salmix_prob')}"
        detector_input = cls.setting(args, "salmix_detector_input")
        if detector_input != cls.flag("salmix_detector_input").default:
            part += f"_detector_{detector_input}"
        return part

    @classmethod
    def draw_mix(cls, images: Tensor, labels: Tensor, saliency: Tensor, settings: FigureSettings) -> MixResult:
        """A mixed batch (the coin always mixes) under ``settings.options``; shares the box's area."""
        mixer = saliencymix.SaliencyMix(prob=1.0, beta=settings.alpha(cls), mean=settings.mean, std=settings.std,
                                        detector_input=cls.setting(settings.options, "salmix_detector_input"),
                                        rng=settings.rng)
        plan = mixer.plan(images)
        mixed, _ = plan.apply(images, torch.eye(images.shape[0], device=images.device))
        return MixResult(cls.name, mixed, pair_shares(plan.perm, np.full(images.shape[0], plan.kept)), box=plan.box)


class FMixMethod(_SuccessorMethod):
    """FMix (Harris et al., "FMix: Enhancing Mixed Sample Data Augmentation", 2020): one binary mask per
    batch cut from a random low-frequency image, lam ~ Beta(--mixup_alpha, --mixup_alpha) weighing
    the labels; :class:`fmix.FMix`."""

    name = "fmix"
    title = "FMix"
    published_mixup_alpha = 1.0
    flags = (_FMIX_DECAY_POWER, _FMIX_MAX_SOFT, _FMIX_SPECTRUM)
    flag_group = "FMix"

    @classmethod
    def _mixer(cls, source: Any, alpha: float, num_classes: int | None = None,
               rng: np.random.Generator | None = None) -> fmix.FMix:
        return fmix.FMix(alpha=alpha, decay_power=cls.setting(source, "fmix_decay_power"),
                         max_soft=cls.setting(source, "fmix_max_soft"), spectrum=cls.setting(source, "fmix_spectrum"),
                         num_classes=num_classes, rng=rng)

    @classmethod
    def from_args(cls, args: Any, num_classes: int, dataset_info: Any, executor: Executor | None) -> Method:
        return cls(num_classes, cls._mixer(args, cls.published_setting(args, "mixup_alpha"), num_classes), _loss(args))

    @classmethod
    def name_part(cls, args: Any) -> str:
        part = f"{super().name_part(args)}_decay_{cls.setting(args, 'fmix_decay_power')}"
        max_soft = cls.setting(args, "fmix_max_soft")
        if max_soft > 0:
            part += f"_soft_{max_soft}"
        spectrum = cls.setting(args, "fmix_spectrum")
        return part + ("" if spectrum == cls.flag("fmix_spectrum").default else f"_spectrum_{spectrum}")

    @classmethod
    def figure_mixer(cls, batch: int, settings: FigureSettings) -> Mixer | None:
        """FMix under ``settings.options``; the shares are the label weights lam (the mask's mean is
        within one pixel of it)."""
        return cls._mixer(settings.options, settings.alpha(cls), rng=settings.rng)


class ResizeMixMethod(_SuccessorMethod):
    """ResizeMix (Qin et al., "ResizeMix: Mixing Data with Preserved Object Information and True
    Labels", 2020): each image's whole partner, shrunk by tau ~ U(--resizemix_scope), pasted into one
    random box; labels by the box's area. Where the paper leaves it open (no official code), as
    OpenMixup implements it; :class:`resizemix.ResizeMix`."""

    name = "resizemix"
    title = "ResizeMix"
    published_mixup_alpha = None
    flags = (_RESIZEMIX_SCOPE, _RESIZEMIX_USE_ALPHA)
    flag_group = "ResizeMix"
    figure_outline = "box"
    OPENMIXUP_ALPHA: ClassVar[float] = 1.0
    """The Beta concentration of OpenMixup's CIFAR configuration (use_alpha with alpha 1)."""

    @classmethod
    def default_mixup_alpha(cls, source: Any) -> float | None:
        return cls.OPENMIXUP_ALPHA if cls.setting(source, "resizemix_use_alpha") else None

    @classmethod
    def unused_mixup_alpha(cls, source: Any) -> str | None:
        if cls.setting(source, "resizemix_use_alpha"):
            return None
        return ("draws its scale uniformly over --resizemix_scope (--mixup_alpha is the Beta concentration of "
                "--resizemix_use_alpha True)")

    @classmethod
    def _mixer(cls, source: Any, alpha: float | None, num_classes: int | None = None,
               rng: np.random.Generator | None = None) -> resizemix.ResizeMix:
        # without use_alpha the mixer never reads alpha: its own default then
        return resizemix.ResizeMix(scope=tuple(cls.setting(source, "resizemix_scope")),
                                   use_alpha=cls.setting(source, "resizemix_use_alpha"),
                                   alpha=cls.OPENMIXUP_ALPHA if alpha is None else alpha, num_classes=num_classes,
                                   rng=rng)

    @classmethod
    def from_args(cls, args: Any, num_classes: int, dataset_info: Any, executor: Executor | None) -> Method:
        alpha = getattr(args, "mixup_alpha", None)
        return cls(num_classes, cls._mixer(args, cls.default_mixup_alpha(args) if alpha is None else alpha,
                                           num_classes), _loss(args))

    @classmethod
    def name_part(cls, args: Any) -> str:
        low, high = cls.setting(args, "resizemix_scope")
        part = f"_method_{cls.name}_scope_{low}_{high}"
        if cls.setting(args, "resizemix_use_alpha"):
            alpha = getattr(args, "mixup_alpha", None)
            part += f"_use_alpha_{cls.default_mixup_alpha(args) if alpha is None else alpha}"
        return part

    @classmethod
    def draw_mix(cls, images: Tensor, labels: Tensor, saliency: Tensor, settings: FigureSettings) -> MixResult:
        """ResizeMix under ``settings.options``; shares the box's area."""
        drawn = cls._mixer(settings.options, settings.alpha(cls), rng=settings.rng).draw(
            images.shape[0], images.shape[-2], images.shape[-1])
        mixed = resizemix.paste_resized(images, drawn.perm, drawn.box)
        return MixResult(cls.name, mixed, pair_shares(drawn.perm, np.full(images.shape[0], drawn.kept)),
                         box=drawn.box)


class _GuidedMixup(Method):
    """What GuidedMixup's two methods share: the flags' group, the folder name, no Beta weight."""

    flag_group = "GuidedMixup"
    published_mixup_alpha = None

    @classmethod
    def unused_mixup_alpha(cls, source: Any) -> str | None:
        return "draws no mixing weight (each pixel's share comes from the two images' saliency maps)"

    @classmethod
    def name_part(cls, args: Any) -> str:
        part = f"_method_{cls.name}_mix_prob_{cls.setting(args, 'mix_prob')}"
        pairing = cls.setting(args, "guided_pairing")
        return part + ("" if pairing == cls.flag("guided_pairing").default else f"_pairing_{pairing}")


class GuidedMixupAPMethod(_GuidedMixup, _SaliencyMethod):
    """GuidedMixup with input-gradient saliency (Guided-AP; Kang & Kim, "GuidedMixup: An Efficient
    Mixup Strategy Guided by Saliency Maps", AAAI 2023), as the released training loop runs it: the
    mixing coin first (probability --mix_prob); a batch left unmixed trains as vanilla, without the
    clean pass; a mixed one runs Co-Mixup's clean pass (saliency and, with clean_lam > 0, the clean
    loss), then each image mixes pixel by pixel with its partner (paired greedily far apart) by the
    ratio of their blurred saliency maps; :class:`guided.GuidedMixupAP`."""

    name = "guided_ap"
    title = "GuidedMixup (AP)"
    published_clean_lam = 0.0
    flags = (_GUIDED_MIX_PROB_AP, _GUIDED_PAIRING)
    mixer: guided.GuidedMixupAP

    @classmethod
    def arg_problems(cls, args: Any, image_size: int, already: Sequence[str]) -> list[str]:
        return Method.arg_problems.__func__(cls, args, image_size, already)

    @classmethod
    def from_args(cls, args: Any, num_classes: int, dataset_info: Any, executor: Executor | None) -> Method:
        mixer = guided.GuidedMixupAP(mix_prob=cls.setting(args, "mix_prob"),
                                     pairing=cls.setting(args, "guided_pairing"), num_classes=num_classes)
        return cls(num_classes, mixer, cls.published_setting(args, "clean_lam"), _loss(args))

    def __init__(self, num_classes: int, mixer: guided.GuidedMixupAP, clean_lam: float = 0.0,
                 loss: str = "bce") -> None:
        super().__init__(num_classes, mixer, clean_lam, loss)

    def _mix(self, images: Tensor, targets: Tensor, saliency: Tensor) -> tuple[Tensor, Tensor]:
        return self.mixer.mix(images, targets, saliency)  # the coin is drawn already

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor) -> StepResult:
        if self.mixer.decide():
            return super().__call__(model, images, labels)
        targets = self._one_hot(images, labels)
        with self.precision.autocast():
            logits = model(images)
        return self._result(logits, targets, 0.0, logits)

    @classmethod
    def figure_mixer(cls, batch: int, settings: FigureSettings) -> Mixer | None:
        """A mixed batch (the coin always mixes) by the given input-gradient saliency; shares mean(M)."""
        return guided.GuidedMixupAP(mix_prob=1.0, pairing=cls.setting(settings.options, "guided_pairing"),
                                    rng=settings.rng)


class GuidedMixupSRMethod(_GuidedMixup, _SuccessorMethod):
    """GuidedMixup with spectral-residual saliency (Guided-SR; Kang & Kim, AAAI 2023): no extra pass;
    with probability --mix_prob each image mixes pixel by pixel with its partner (paired greedily
    far apart) by the ratio of the blurred spectral residuals of the two images;
    :class:`guided.GuidedMixupSR`."""

    name = "guided_sr"
    title = "GuidedMixup (SR)"
    flags = (_GUIDED_MIX_PROB_SR, _GUIDED_PAIRING)

    @classmethod
    def from_args(cls, args: Any, num_classes: int, dataset_info: Any, executor: Executor | None) -> Method:
        mixer = guided.GuidedMixupSR(mix_prob=cls.setting(args, "mix_prob"),
                                     pairing=cls.setting(args, "guided_pairing"), num_classes=num_classes)
        return cls(num_classes, mixer, _loss(args))

    @classmethod
    def draw_mix(cls, images: Tensor, labels: Tensor, saliency: Tensor, settings: FigureSettings) -> MixResult:
        """A mixed batch (the coin always mixes); the figure shows the spectral residual it mixed by
        instead of the input-gradient saliency; shares mean(M)."""
        mixer = guided.GuidedMixupSR(mix_prob=1.0, pairing=cls.setting(settings.options, "guided_pairing"),
                                     rng=settings.rng)
        mixed, shares = mixer(images, torch.eye(images.shape[0], device=images.device))
        return MixResult(cls.name, mixed, shares.double().cpu().numpy(), saliency=guided.spectral_residual(images))


