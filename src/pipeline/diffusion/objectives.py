"""Training objectives and their samplers: rectified flow (velocity) and DDPM (epsilon).

Both share one interface: ``loss(model, x0, y)`` for training and
``sample(denoiser, noise, steps, sampler)`` for generation, where ``denoiser(x, t, x_self)`` is the
model's prediction at time ``t`` (a 0-d tensor in [0, 1]), usually wrapped by :func:`guided`;
``x_self`` is the sampler's previous estimate of the clean latents (None at the first step), which
only a self-conditioning model reads. Time runs from data (t = 0) to noise (t = 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
Projection = Callable[[torch.Tensor], torch.Tensor]
SELF_CONDITION_RATE = 0.5  # share of training examples that see the model's own estimate (Analog Bits)
PREDICTIONS = ("velocity", "codes")  # what a rectified-flow model predicts


@dataclass(frozen=True)
class Restart:
    """Restart sampling (Xu et al. 2023): once the sampler has reached t = 0, noise the
    sample back to ``time`` with fresh noise and integrate down again in ``steps`` steps, ``count``
    times. Each round lets the model revise what the previous one settled; on text, where a DiT
    decides all codes at once, it corrects words that came out misspelt (README: 4.80 -> 4.19 bits per
    byte with 24 rounds of 3 steps from 0.3, 3.98 with 96 rounds of 2). ``count`` 0 is the plain ODE. ``temperature``: the softmax
    temperature of a code-predicting DiT in the rounds (the first pass keeps its own); the objective
    receives the rounds' denoiser built with it."""

    count: int = 0
    time: float = 0.3
    steps: int = 3
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.count < 0 or self.steps < 1 or not 0 < self.time < 1 or not self.temperature > 0:
            raise ValueError(
                f"restart needs count >= 0, steps >= 1, 0 < time < 1 and temperature > 0 "
                f"(got count {self.count}, time {self.time}, steps {self.steps}, temperature {self.temperature})"
            )

    def settings(self, codes: bool = True) -> dict:
        """What ``eval.json`` records; ``codes``: whether the model has a softmax the temperature applies to."""
        temperature = {"restart_temperature": self.temperature} if codes else {}
        return {"restarts": self.count, "restart_time": self.time, "restart_steps": self.steps, **temperature}


def guided(model: nn.Module, y: torch.Tensor | None, scale: float, null: torch.Tensor | None = None, temperature: float = 1.0) -> Denoiser:
    """Classifier-free guidance on all channels: ``uncond + scale * (cond - uncond)``, where the
    unconditional prediction reads ``null`` (the model's null condition for every row of ``y``).

    Scale 1 (or no condition) is the plain conditional prediction, one forward per step.
    ``temperature``: a code-predicting DiT's softmax temperature (1 for any other model).
    """
    if y is None or scale == 1.0:
        return lambda x, t, x_self=None: model(x, t.expand(x.shape[0]), y, x_self, temperature=temperature)
    if null is None:
        raise ValueError("guidance needs the null condition")

    def denoise(x: torch.Tensor, t: torch.Tensor, x_self: torch.Tensor | None = None) -> torch.Tensor:
        both = None if x_self is None else torch.cat([x_self, x_self])
        cond, uncond = model(torch.cat([x, x]), t.expand(2 * x.shape[0]), torch.cat([y, null]), both, temperature=temperature).chunk(2)
        return torch.lerp(uncond, cond, scale)

    return denoise


class Objective:
    """What a training objective provides; see :class:`RectifiedFlow` and :class:`DDPM`."""

    name: ClassVar[str]
    samplers: ClassVar[tuple[str, ...]]
    default_sampler: ClassVar[str]
    config: dict

    @property
    def predicts_codes(self) -> bool:
        """Whether the model predicts the tokenizer's codes (a DiT with ``codebook_size`` > 0)."""
        return False

    def loss(self, model: nn.Module, x0: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def clean_estimate(self, x_t: torch.Tensor, t: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        """The estimate of ``x0`` implied by the model's ``prediction`` at ``x_t`` and model time ``t``."""
        raise NotImplementedError

    def self_condition(self, model: nn.Module, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor | None:
        """For a self-conditioning model, its own no-grad estimate of ``x0`` for the first half of the
        examples (a random half: batches are shuffled) and zeros (as at the first sampling step) for the
        rest; None for other models.

        Only that half runs the extra forward, so it costs half a forward, not a whole one; the share
        is fixed, not a coin, so every rank runs the same forwards (FSDP needs that).
        """
        if not getattr(model, "self_condition", False):
            return None
        fed = math.ceil(SELF_CONDITION_RATE * x_t.shape[0])
        estimate = torch.zeros_like(x_t)
        with torch.no_grad():
            head = slice(0, fed)
            estimate[head] = self.clean_estimate(x_t[head], t[head], model(x_t[head], t[head], None if y is None else y[head])).to(x_t.dtype)
        return estimate

    def sample(
        self, denoiser: Denoiser, noise: torch.Tensor, steps: int, sampler: str | None = None,
        generator: torch.Generator | None = None, project: Projection | None = None, restart: Restart | None = None,
        restart_denoiser: Denoiser | None = None,
    ) -> torch.Tensor:
        """Latents from ``noise`` in ``steps`` steps. ``project`` maps every clean estimate onto the
        data's support before the step uses it (Diffusion-LM's clamping: the nearest codes);
        ``restart``: rounds of :class:`Restart` sampling after it, with ``restart_denoiser`` (default ``denoiser``)."""
        raise NotImplementedError

    def check_sampler(self, sampler: str | None) -> str:
        sampler = sampler or self.default_sampler
        if sampler not in self.samplers:
            raise ValueError(f"sampler {sampler!r} does not fit objective {self.name}; valid: {', '.join(self.samplers)}")
        return sampler


def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.ndim - 1))).to(like.dtype)


class RectifiedFlow(Objective):
    """``x_t = (1 - t) x0 + t noise``; the model predicts the velocity ``noise - x0``, or, with
    ``prediction="codes"``, logits over the tokenizer's codes for each latent (a DiT with a
    :class:`~pipeline.diffusion.code_head.CodeHead`): it then trains with cross-entropy against
    the code each latent quantizes to, diffusing the code vectors themselves, and its clean estimate
    is the expected code vector, from which the sampler takes the velocity ``(x_t - estimate) / t``
    (CDCD's score interpolation).

    Training times are logit-normal (``sigmoid(N(time_mean, time_std))``), which spends the
    model's capacity on the middle of the path, as in SD3 and LightningDiT. ``time_shift`` > 1
    moves the training times towards noise (SD3's ``t' = s t / (1 + (s - 1) t)``): latents that are
    easy to tell apart once a little noise is gone (many positions, or near-discrete codes such as
    text) need their training at high noise. The sampler's grid is shifted by ``grid_shift``, by
    default ``time_shift`` as in SD3 (< 1 moves it towards low noise); text's DiT trains at 4 and samples best at 0.1,
    where the codes are spelt out (README).
    """

    name = "flow"
    samplers = ("euler", "heun")
    default_sampler = "heun"

    def __init__(
        self, time_mean: float = 0.0, time_std: float = 1.0, time_shift: float = 1.0, prediction: str = "velocity",
        grid_shift: float | None = None,
    ) -> None:
        for name, value in (("time_shift", time_shift), ("grid_shift", grid_shift)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")
        self.time_mean, self.time_std, self.time_shift, self.prediction = time_mean, time_std, time_shift, prediction
        self.grid_shift = time_shift if grid_shift is None else grid_shift
        self.config = {"time_mean": time_mean, "time_std": time_std, "time_shift": time_shift, "prediction": prediction, "grid_shift": grid_shift}

    @property
    def predicts_codes(self) -> bool:
        return self.prediction == "codes"

    def shift(self, t: torch.Tensor, shift: float | None = None) -> torch.Tensor:
        """``t`` under SD3's shift ``shift`` (default ``time_shift``): > 1 moves it towards noise, < 1 towards low noise."""
        s = self.time_shift if shift is None else shift
        return s * t / (1 + (s - 1) * t)

    def loss(self, model: nn.Module, x0: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        t = self.shift(torch.sigmoid(self.time_mean + self.time_std * torch.randn(x0.shape[0], device=x0.device)))
        noise = torch.randn_like(x0)
        if self.predicts_codes:
            codes = model.code_head.nearest(x0)
            x0 = model.code_head.embed(codes).to(x0.dtype)
        x_t = torch.lerp(x0, noise, _expand(t, x0))
        x_self = self.self_condition(model, x_t, t, y)
        if self.predicts_codes:
            logits = model(x_t, t, y, x_self, logits=True).float()
            return F.cross_entropy(logits.movedim(1, -1).reshape(-1, logits.shape[1]), codes.reshape(-1))
        return F.mse_loss(model(x_t, t, y, x_self).float(), (noise - x0).float())

    def clean_estimate(self, x_t: torch.Tensor, t: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        return prediction if self.predicts_codes else x_t - _expand(t, x_t) * prediction

    def grid(self, steps: int, start: float = 1.0) -> torch.Tensor:
        """``steps + 1`` sampler times from ``start`` down to 0: a uniform grid shifted by ``grid_shift``."""
        s = self.grid_shift
        return self.shift(torch.linspace(start / (s - (s - 1) * start), 0.0, steps + 1), s)

    @torch.no_grad()
    def sample(
        self, denoiser: Denoiser, noise: torch.Tensor, steps: int, sampler: str | None = None,
        generator: torch.Generator | None = None, project: Projection | None = None, restart: Restart | None = None,
        restart_denoiser: Denoiser | None = None,
    ) -> torch.Tensor:
        """Integrate the ODE from t = 1 to 0 on a uniform grid, shifted by ``grid_shift`` (Heun: 2 evaluations per step),
        then run the rounds of ``restart`` with ``restart_denoiser`` (default ``denoiser``), each from the sample
        noised back to ``restart.time``.

        With ``project`` or a code-predicting model, the velocity is the one pointing from the
        (projected) clean estimate to ``x`` (a DDIM step towards it), and the last step is an Euler
        step, which lands on it (the velocity at t = 0 is undefined there).
        """
        sampler = self.check_sampler(sampler)
        x, x_self = self._integrate(denoiser, noise, None, self.grid(steps).to(noise.device), sampler, project)
        if restart is not None and restart.count:
            times = self.grid(restart.steps, restart.time).to(noise.device)
            for _ in range(restart.count):
                fresh = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
                x, x_self = self._integrate(restart_denoiser or denoiser, torch.lerp(x, fresh, restart.time), x_self, times, sampler, project)
        return x

    def _integrate(
        self, denoiser: Denoiser, x: torch.Tensor, x_self: torch.Tensor | None, times: torch.Tensor, sampler: str, project: Projection | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` at ``times[0]`` carried to ``times[-1]``, and the last clean estimate (what a self-conditioning model reads next)."""
        from_estimate = project is not None or self.predicts_codes

        def velocity_at(x: torch.Tensor, t: torch.Tensor, x_self: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            """The velocity at ``(x, t)`` and the clean estimate it implies."""
            prediction = denoiser(x, t, x_self)
            estimate = self.clean_estimate(x, t, prediction)
            if not from_estimate:
                return prediction, estimate
            if project is not None:
                estimate = project(estimate)
            return (x - estimate) / t, estimate

        for t, t_next in zip(times[:-1], times[1:]):
            velocity, x_self = velocity_at(x, t, x_self)
            x_euler = x + (t_next - t) * velocity
            if sampler == "heun" and (not from_estimate or t_next > 0):
                x = x + (t_next - t) * 0.5 * (velocity + velocity_at(x_euler, t_next, x_self)[0])
            else:
                x = x_euler
        return x, x_self


def beta_schedule(schedule: str, num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """``linear`` (DDPM) or ``cosine`` (improved DDPM) betas, float64."""
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
    if schedule == "cosine":
        steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
        alpha_bar = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    raise ValueError(f"schedule must be linear or cosine, got {schedule!r}")


class DDPM(Objective):
    """Discrete-time diffusion; the model predicts the noise ``eps``. Step ``k`` is shown to the model as ``t = k / T``.

    ``clip_denoised`` bounds the sampler's estimate of ``x0`` to ``[-c, c]``: at the noisiest
    steps ``x0 = (x - sqrt(1 - a) eps) / sqrt(a)`` divides by ``sqrt(a) ~ 0.006``, so a small
    error in ``eps`` would otherwise throw the sample far out (DDPM clips images to [-1, 1]).
    """

    name = "ddpm"
    samplers = ("ddpm", "ddim")
    default_sampler = "ddim"

    def __init__(self, schedule: str = "linear", num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, clip_denoised: float | None = 5.0) -> None:
        self.num_timesteps, self.clip_denoised = num_timesteps, clip_denoised
        self.alpha_bar = torch.cumprod(1 - beta_schedule(schedule, num_timesteps, beta_start, beta_end), dim=0)
        self.config = {"schedule": schedule, "num_timesteps": num_timesteps, "beta_start": beta_start, "beta_end": beta_end, "clip_denoised": clip_denoised}

    def loss(self, model: nn.Module, x0: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        k = torch.randint(0, self.num_timesteps, (x0.shape[0],), device=x0.device)
        alpha_bar = _expand(self.alpha_bar.to(x0.device)[k], x0)
        noise = torch.randn_like(x0)
        x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
        t = k.float() / self.num_timesteps
        return F.mse_loss(model(x_t, t, y, self.self_condition(model, x_t, t, y)).float(), noise.float())

    def clean_estimate(self, x_t: torch.Tensor, t: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        k = (t * self.num_timesteps).round().long()
        alpha_bar = _expand(self.alpha_bar.to(x_t.device)[k], x_t)
        x0 = (x_t - (1 - alpha_bar).sqrt() * prediction) / alpha_bar.sqrt()
        return x0 if self.clip_denoised is None else x0.clamp(-self.clip_denoised, self.clip_denoised)

    @torch.no_grad()
    def sample(
        self, denoiser: Denoiser, noise: torch.Tensor, steps: int, sampler: str | None = None,
        generator: torch.Generator | None = None, project: Projection | None = None, restart: Restart | None = None,
        restart_denoiser: Denoiser | None = None,
    ) -> torch.Tensor:
        """DDIM (deterministic) or ancestral DDPM on ``steps`` evenly respaced timesteps, then the rounds of
        ``restart`` with ``restart_denoiser`` (default ``denoiser``), each from the sample noised back to timestep
        ``restart.time * T``."""
        sampler = self.check_sampler(sampler)
        x, x0 = self._denoise(denoiser, noise, None, self.timesteps(self.num_timesteps - 1, steps), sampler, generator, project)
        if restart is not None and restart.count:
            start = round(restart.time * (self.num_timesteps - 1))
            ks, alpha_bar = self.timesteps(start, restart.steps + 1), float(self.alpha_bar[start])
            for _ in range(restart.count):
                fresh = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
                x, x0 = self._denoise(restart_denoiser or denoiser, math.sqrt(alpha_bar) * x + math.sqrt(1 - alpha_bar) * fresh, x0, ks, sampler, generator, project)
        return x

    @staticmethod
    def timesteps(start: int, count: int) -> list[int]:
        """``count`` evenly spaced timesteps from ``start`` down to 0 (fewer where they would repeat)."""
        return torch.linspace(start, 0, count).round().long().unique_consecutive().tolist()

    def _denoise(
        self, denoiser: Denoiser, x: torch.Tensor, x0: torch.Tensor | None, ks: list[int], sampler: str,
        generator: torch.Generator | None, project: Projection | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` at timestep ``ks[0]`` carried through ``ks`` to the data, and the last clean estimate."""
        for i, k in enumerate(ks):
            alpha_bar = float(self.alpha_bar[k])
            alpha_bar_prev = float(self.alpha_bar[ks[i + 1]]) if i + 1 < len(ks) else 1.0
            eps = denoiser(x, torch.tensor(k / self.num_timesteps, device=x.device), x0)
            x0 = (x - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)
            if self.clip_denoised is not None or project is not None:
                if self.clip_denoised is not None:
                    x0 = x0.clamp(-self.clip_denoised, self.clip_denoised)
                if project is not None:
                    x0 = project(x0)
                eps = (x - math.sqrt(alpha_bar) * x0) / math.sqrt(1 - alpha_bar)
            if sampler == "ddim":
                x = math.sqrt(alpha_bar_prev) * x0 + math.sqrt(1 - alpha_bar_prev) * eps
                continue
            beta = 1 - alpha_bar / alpha_bar_prev
            mean = (math.sqrt(alpha_bar_prev) * beta * x0 + math.sqrt(1 - beta) * (1 - alpha_bar_prev) * x) / (1 - alpha_bar)
            if i + 1 < len(ks):
                variance = beta * (1 - alpha_bar_prev) / (1 - alpha_bar)
                mean = mean + math.sqrt(variance) * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            x = mean
        return x, x0


OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (RectifiedFlow, DDPM)}
