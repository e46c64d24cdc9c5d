"""The DiT, the objectives and samplers, guidance and EMA, on tiny models and analytic targets."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import train_on_classes
from pipeline.diffusion import DDPM, PRESETS, DiffusionModule, DiT, RectifiedFlow, Restart, guided
from pipeline.diffusion.alignment import PromptAlignment
from pipeline.diffusion.ema import ema_model
from pipeline.diffusion.objectives import beta_schedule
from pipeline.diffusion.prompt import with_presence


def tiny_dit(**kwargs) -> DiT:
    options = dict(input_size=7, in_channels=4, patch_size=2, depth=2, hidden_size=32, num_heads=2, num_classes=3)
    return DiT(**{**options, **kwargs})


@pytest.mark.parametrize(
    "options, shape",
    [
        (dict(input_size=7, patch_size=2), (3, 4, 7, 7)),  # padded to 4 x 4 patches
        (dict(input_size=[8, 6], patch_size=2), (3, 4, 8, 6)),
        (dict(input_size=8, patch_size=1), (3, 4, 8, 8)),
        (dict(input_size=[16], patch_size=4), (3, 4, 16)),  # a 1-D latent sequence
        (dict(input_size=[15], patch_size=4), (3, 4, 15)),
        (dict(input_size=8, norm="rmsnorm", mlp="swiglu", qk_norm=True), (3, 4, 8, 8)),
    ],
)
def test_dit_keeps_the_input_shape_and_is_zero_at_init(options: dict, shape: tuple) -> None:
    torch.manual_seed(0)
    model = tiny_dit(**options)
    x = torch.randn(shape)
    out = model(x, torch.rand(shape[0]), torch.tensor([0, 1, 3]))  # 3 is the null class
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0


def test_patchify_and_unpatchify_are_inverse() -> None:
    for options, shape in ((dict(input_size=8), (2, 4, 8, 8)), (dict(input_size=[12], patch_size=3), (2, 4, 12))):
        model = tiny_dit(**options)
        x = torch.randn(shape)
        assert torch.equal(model.unpatchify(model.patchify(x)), x)


def test_a_self_conditioning_dit_reads_its_previous_estimate() -> None:
    """Absent, the estimate reads as zeros; present, it changes the prediction; a plain DiT ignores it."""
    torch.manual_seed(0)
    model = tiny_dit(self_condition=True)
    torch.nn.init.normal_(model.final_linear.weight, std=0.02)  # undo the zero init so the output depends on the inputs
    torch.nn.init.normal_(model.final_modulation.weight, std=0.02)
    x, t, y = torch.randn(2, 4, 7, 7), torch.rand(2), torch.tensor([0, 1])
    assert model.patch_embed.in_features == 2 * 4 * 2 * 2
    assert torch.equal(model(x, t, y), model(x, t, y, torch.zeros_like(x)))
    assert not torch.allclose(model(x, t, y), model(x, t, y, torch.randn_like(x)))
    plain = tiny_dit()
    assert torch.equal(plain(x, t, y), plain(x, t, y, torch.randn_like(x)))


def test_self_conditioning_feeds_the_estimate_to_half_the_examples() -> None:
    """The first half gets the model's own estimate (what a full forward gives it), the rest zeros."""
    torch.manual_seed(0)
    model = tiny_dit(self_condition=True)
    torch.nn.init.normal_(model.final_linear.weight, std=0.02)
    x_t, t, y = torch.randn(7, 4, 7, 7), torch.rand(7), torch.arange(7) % 2
    estimate = RectifiedFlow().self_condition(model, x_t, t, y)
    fed = estimate.flatten(1).abs().sum(1) > 0
    assert fed.tolist() == [True] * 4 + [False] * 3 and not estimate.requires_grad
    with torch.no_grad():
        full = RectifiedFlow().clean_estimate(x_t, t, model(x_t, t, y))
    torch.testing.assert_close(estimate[:4], full[:4])
    assert RectifiedFlow().self_condition(tiny_dit(), x_t, t, None) is None


@pytest.mark.parametrize("objective", [RectifiedFlow(), DDPM("cosine", num_timesteps=100)], ids=["flow", "ddpm"])
def test_clean_estimates_invert_the_noising(objective) -> None:
    """Given the true velocity or noise, the estimate of x0 that self-conditioning feeds back is exact."""
    x0, noise, t = torch.randn(3, 2, 5), torch.randn(3, 2, 5), torch.tensor([0.2, 0.5, 0.9])
    if isinstance(objective, RectifiedFlow):
        x_t, prediction = torch.lerp(x0, noise, t.view(-1, 1, 1)), noise - x0
    else:
        alpha_bar = objective.alpha_bar[(t * 100).round().long()].float().view(-1, 1, 1)
        x_t, prediction = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise, noise
    assert torch.allclose(objective.clean_estimate(x_t, t, prediction), x0, atol=1e-4)


def test_zero_init_still_learns() -> None:
    torch.manual_seed(0)
    model = tiny_dit()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, t, y = torch.randn(8, 4, 7, 7), torch.rand(8), torch.randint(0, 3, (8,))
    for _ in range(3):
        loss = RectifiedFlow().loss(model, x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.count_nonzero(model(x, t, y)) > 0
    assert all(block.modulation.weight.abs().sum() > 0 for block in model.blocks)


def test_presets_follow_the_dit_paper() -> None:
    assert PRESETS == {"XS": (6, 256, 4), "S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
    model = DiT.from_preset("S", input_size=8, in_channels=4, patch_size=2, num_classes=10)
    assert (len(model.blocks), model.config["hidden_size"], model.config["num_heads"], model.config["preset"]) == (12, 384, 6, "S")
    # DiT-S/2 on 32x32x4 latents has about 33M parameters (DiT paper, Table 1)
    with torch.device("meta"):  # sizes only: no memory, no init time
        paper = DiT.from_preset("S", input_size=32, in_channels=4, patch_size=2, num_classes=1000)
    assert 32e6 < sum(p.numel() for p in paper.parameters()) < 34e6
    with pytest.raises(ValueError, match="valid: XS, S, B, L, XL"):
        DiT.from_preset("M", input_size=8, in_channels=4)


def test_flops_count_matches_the_dit_paper() -> None:
    """DiT-XL/2 at 256 px (32x32x4 latents) is quoted as 118.6 GFLOPs (multiply-adds)."""
    with torch.device("meta"):
        model = DiT.from_preset("XL", input_size=32, in_channels=4, patch_size=2, num_classes=1000)
    assert model.flops_per_sample() / 2 == pytest.approx(118.6e9, rel=0.02)


def test_unconditional_model_takes_no_labels() -> None:
    model = tiny_dit(num_classes=0)
    assert model.y_embed is None
    assert model(torch.randn(2, 4, 7, 7), torch.rand(2)).shape == (2, 4, 7, 7)


def test_guidance_scale_one_is_the_conditional_prediction_and_zero_the_unconditional() -> None:
    torch.manual_seed(0)
    model = tiny_dit()
    for parameter in model.parameters():  # leave the zero init behind
        torch.nn.init.normal_(parameter, std=0.05)
    x, t, y = torch.randn(4, 4, 7, 7), torch.tensor(0.3), torch.tensor([0, 1, 2, 0])
    conditional = model(x, t.expand(4), y)
    unconditional = model(x, t.expand(4), torch.full_like(y, model.null_class))
    assert torch.allclose(guided(model, y, 1.0, model.null_condition(y))(x, t), conditional, atol=1e-6)
    assert torch.allclose(guided(model, y, 0.0, model.null_condition(y))(x, t), unconditional, atol=1e-5)
    assert torch.allclose(guided(model, y, 3.0, model.null_condition(y))(x, t), unconditional + 3.0 * (conditional - unconditional), atol=1e-5)


# Exact denoisers for data x0 ~ N(MEAN, STD^2): the samplers must turn noise into that distribution.
MEAN, STD = 1.5, 0.5


def flow_velocity(x: torch.Tensor, t: torch.Tensor, x_self: torch.Tensor | None = None) -> torch.Tensor:
    variance = (1 - t) ** 2 * STD**2 + t**2
    centred = x - (1 - t) * MEAN
    return (t - (1 - t) * STD**2) / variance * centred - MEAN


def ddpm_epsilon(objective: DDPM):
    def predict(x: torch.Tensor, t: torch.Tensor, x_self: torch.Tensor | None = None) -> torch.Tensor:
        alpha_bar = float(objective.alpha_bar[round(float(t) * objective.num_timesteps)])
        variance = alpha_bar * STD**2 + 1 - alpha_bar
        return math.sqrt(1 - alpha_bar) / variance * (x - math.sqrt(alpha_bar) * MEAN)

    return predict


@pytest.mark.parametrize(
    "objective, sampler, steps",
    [
        (RectifiedFlow(), "euler", 50),
        (RectifiedFlow(), "heun", 10),
        (RectifiedFlow(time_shift=3.0), "heun", 10),
        (DDPM("linear"), "ddim", 50),
        (DDPM("cosine"), "ddim", 50),
        (DDPM("linear"), "ddpm", 100),
        (DDPM("cosine"), "ddpm", 100),
    ],
)
def test_samplers_recover_a_gaussian_target(objective, sampler: str, steps: int) -> None:
    denoiser = flow_velocity if isinstance(objective, RectifiedFlow) else ddpm_epsilon(objective)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(20000, 1, generator=generator, dtype=torch.float64)
    samples = objective.sample(denoiser, noise, steps, sampler, generator)
    assert samples.mean().item() == pytest.approx(MEAN, abs=0.03)
    assert samples.std().item() == pytest.approx(STD, abs=0.03)


def two_point_denoiser(objective):
    """The exact prediction for data that is -1 or +1 with equal odds: E[x0 | x_t] = tanh(signal * x_t / noise_variance)."""
    def predict(x: torch.Tensor, t: torch.Tensor, x_self=None) -> torch.Tensor:
        if isinstance(objective, RectifiedFlow):
            return (x - torch.tanh(x * (1 - t) / t**2)) / t
        alpha_bar = float(objective.alpha_bar[(t * objective.num_timesteps).round().long()])
        clean = torch.tanh(x * math.sqrt(alpha_bar) / (1 - alpha_bar))
        return (x - math.sqrt(alpha_bar) * clean) / math.sqrt(1 - alpha_bar)

    return predict


@pytest.mark.parametrize(
    "objective, sampler", [(RectifiedFlow(), "euler"), (RectifiedFlow(), "heun"), (DDPM("cosine"), "ddim"), (DDPM("linear"), "ddpm")],
)
def test_a_projection_lands_every_sample_on_the_support(objective, sampler: str) -> None:
    """Diffusion-LM's clamping: in four steps every sample ends exactly on one of the two points, half on each."""
    noise = torch.randn(4000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    projected = objective.sample(two_point_denoiser(objective), noise, 4, sampler, torch.Generator().manual_seed(1), project=torch.sign)
    assert torch.equal(projected.abs(), torch.ones_like(projected))
    assert (projected > 0).double().mean().item() == pytest.approx(0.5, abs=0.05)


def test_time_shift_moves_training_times_towards_noise() -> None:
    """SD3's shift maps [0, 1] onto itself, keeps the ends and pushes the middle towards noise."""
    flow = RectifiedFlow(time_shift=3.0)
    t = torch.linspace(0.0, 1.0, 11)
    shifted = flow.shift(t)
    assert shifted[0] == 0.0 and shifted[-1] == 1.0 and torch.all(shifted[1:-1] > t[1:-1])
    assert torch.all(shifted[1:] > shifted[:-1])
    assert flow.shift(torch.tensor(0.5)).item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="time_shift"):
        RectifiedFlow(time_shift=0.0)


@pytest.mark.parametrize("grid_shift, first_steps", [(None, [1.0, 0.9, 0.75]), (1.0, [1.0, 0.75, 0.5])])
def test_the_sampler_grid_takes_grid_shift_and_defaults_to_time_shift(grid_shift: float | None, first_steps: list[float]) -> None:
    """Euler on 4 steps visits 1, 3/4, 1/2, 1/4 unshifted; with time_shift 3 (as SD3) 1, 0.9, 0.75, 0.5."""
    flow, seen = RectifiedFlow(time_shift=3.0, grid_shift=grid_shift), []

    def denoiser(x: torch.Tensor, t: torch.Tensor, x_self: torch.Tensor | None) -> torch.Tensor:
        seen.append(float(t))
        return torch.zeros_like(x)

    flow.sample(denoiser, torch.randn(2, 3), steps=4, sampler="euler")
    assert seen[:3] == pytest.approx(first_steps) and len(seen) == 4
    assert flow.config["grid_shift"] == grid_shift and flow.config["time_shift"] == 3.0  # what dit.pt keeps
    with pytest.raises(ValueError, match="grid_shift"):
        RectifiedFlow(grid_shift=-1.0)


@pytest.mark.parametrize(
    "objective, sampler, steps", [(RectifiedFlow(), "heun", 5), (RectifiedFlow(grid_shift=0.5), "euler", 50), (DDPM("cosine"), "ddim", 40)],
)
def test_restart_rounds_start_at_the_restart_time_and_keep_the_target(objective, sampler: str, steps: int) -> None:
    """Each round noises the sample back to ``restart.time`` and samples down again in ``steps`` steps; with the
    exact denoiser the samples keep the target distribution (first-order samplers need more steps for that, as
    each round adds its discretisation error), and the same generator gives the same samples."""
    denoiser = flow_velocity if isinstance(objective, RectifiedFlow) else ddpm_epsilon(objective)
    seen = []

    def watched(x: torch.Tensor, t: torch.Tensor, x_self: torch.Tensor | None) -> torch.Tensor:
        seen.append(float(t))
        return denoiser(x, t, x_self)

    noise = torch.randn(20000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    restart = Restart(count=3, time=0.3, steps=steps)
    plain = objective.sample(denoiser, noise, 8, sampler, torch.Generator().manual_seed(1))
    restarted = objective.sample(watched, noise, 8, sampler, torch.Generator().manual_seed(1), restart=restart)
    again = objective.sample(denoiser, noise, 8, sampler, torch.Generator().manual_seed(1), restart=restart)
    assert torch.equal(restarted, again) and not torch.equal(restarted, plain)
    assert restarted.mean().item() == pytest.approx(MEAN, abs=0.03) and restarted.std().item() == pytest.approx(STD, abs=0.03)
    round_start = 0.3 if isinstance(objective, RectifiedFlow) else round(0.3 * (objective.num_timesteps - 1)) / objective.num_timesteps
    assert seen.count(pytest.approx(round_start)) == 3 and max(seen[-steps:]) <= round_start + 1e-6
    assert torch.equal(objective.sample(denoiser, noise, 8, sampler, torch.Generator().manual_seed(1), restart=Restart(count=0)), plain)


def test_restart_rounds_use_their_own_denoiser() -> None:
    """``restart_denoiser`` (a code DiT at ``restart.temperature``) serves the rounds only; the first pass keeps ``denoiser``."""
    calls: dict[str, list[float]] = {"first": [], "rounds": []}

    def counted(name: str):
        def denoiser(x: torch.Tensor, t: torch.Tensor, x_self: torch.Tensor | None) -> torch.Tensor:
            calls[name].append(float(t))
            return flow_velocity(x, t, x_self)
        return denoiser

    noise = torch.randn(64, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    RectifiedFlow().sample(counted("first"), noise, 6, "heun", torch.Generator().manual_seed(1), restart=Restart(count=4, steps=2), restart_denoiser=counted("rounds"))
    assert len(calls["first"]) == 6 * 2 and max(calls["first"]) == pytest.approx(1.0)  # 6 Heun steps of 2 evaluations from t = 1
    assert len(calls["rounds"]) == 4 * 2 * 2 and max(calls["rounds"]) == pytest.approx(0.3)  # 4 rounds of 2 Heun steps from t = 0.3


@pytest.mark.parametrize("options", [dict(count=-1), dict(steps=0), dict(time=0.0), dict(time=1.0), dict(temperature=0.0)])
def test_restart_settings_that_cannot_sample_are_refused(options: dict) -> None:
    with pytest.raises(ValueError, match="restart needs"):
        Restart(**options)


def test_a_sampler_that_does_not_fit_the_objective_is_refused() -> None:
    with pytest.raises(ValueError, match="valid: euler, heun"):
        RectifiedFlow().sample(flow_velocity, torch.randn(2, 1), 2, "ddim")
    with pytest.raises(ValueError, match="valid: ddpm, ddim"):
        DDPM().check_sampler("heun")


def test_beta_schedules() -> None:
    linear, cosine = beta_schedule("linear", 1000), beta_schedule("cosine", 1000)
    assert linear[0].item() == pytest.approx(1e-4) and linear[-1].item() == pytest.approx(0.02)
    for betas in (linear, cosine):
        alpha_bar = torch.cumprod(1 - betas, 0)
        assert torch.all(alpha_bar[1:] < alpha_bar[:-1]) and alpha_bar[-1] < 1e-3
    with pytest.raises(ValueError):
        beta_schedule("quadratic", 10)


@pytest.mark.parametrize(
    "objective, self_condition",
    [
        (RectifiedFlow(), False),
        pytest.param(DDPM("cosine", num_timesteps=100, clip_denoised=2.0), False, marks=pytest.mark.slow),  # DDPM's parts have unit tests too
        pytest.param(RectifiedFlow(time_shift=2.0), True, marks=pytest.mark.slow),  # so do the shift and self-conditioning
    ],
    ids=["flow", "ddpm", "flow-shifted-self-conditioned"],
)
def test_a_tiny_dit_learns_a_class_conditional_gaussian_mixture(objective, self_condition: bool) -> None:
    """Class c's latents are all equal to c - 1: after training, guided samples land near their class value."""
    torch.manual_seed(0)
    model = DiT(input_size=[4], in_channels=2, patch_size=2, depth=2, hidden_size=64, num_heads=2, num_classes=3, self_condition=self_condition)
    first, last = train_on_classes(model, objective, lambda y: (y.float() - 1.0).view(-1, 1, 1).expand(64, 2, 4) + 0.05 * torch.randn(64, 2, 4), 400)
    assert last < 0.5 * first
    labels = torch.arange(3).repeat_interleave(16)
    generator = torch.Generator().manual_seed(1)
    samples = objective.sample(guided(model, labels, 2.0, torch.full_like(labels, 3)), torch.randn(48, 2, 4, generator=generator), 20, generator=generator)
    per_class = samples.mean(dim=(1, 2)).view(3, 16).mean(1)
    assert torch.allclose(per_class, torch.tensor([-1.0, 0.0, 1.0]), atol=0.25), per_class


def test_ema_ramps_up_and_tracks_the_model() -> None:
    model = torch.nn.Linear(3, 3)
    ema = ema_model(model, decay=0.99)
    assert torch.equal(ema.module.weight, model.weight)
    ema.update_parameters(model)  # the first update copies
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update_parameters(model)  # n=1: decay (1 + 1) / (10 + 1)
    expected_decay = 2 / 11
    assert torch.allclose(ema.module.weight, model.weight - expected_decay, atol=1e-6)
    for _ in range(2000):
        ema.update_parameters(model)
    assert torch.allclose(ema.module.weight, model.weight, atol=1e-5)
    assert not any(p.requires_grad for p in ema.parameters())


def test_a_smaller_ema_warmup_averages_over_more_of_the_run() -> None:
    """Update n weighs (warmup - 1) / (warmup + n): with warmup 3 a run's weights count about linearly (their
    weighted mean step lies near two thirds of the run), with 10 mostly its end (near nine tenths)."""
    model = torch.nn.Linear(1, 1, bias=False)
    averages = {warmup: ema_model(model, decay=0.999, warmup=warmup) for warmup in (3.0, 10.0)}
    with torch.no_grad():
        for step in range(101):
            model.weight.fill_(float(step))  # the weights are the step: the average is the weighted mean step
            for ema in averages.values():
                ema.update_parameters(model)
            if step == 1:
                assert averages[3.0].module.weight.item() == pytest.approx(0.5)  # the copy, then 2 / (3 + 1)
    assert 60 < averages[3.0].module.weight.item() < 70
    assert 85 < averages[10.0].module.weight.item() < 95
    with pytest.raises(ValueError, match="warmup must be > 1"):
        ema_model(model, decay=0.999, warmup=1.0)


def prompt_dit(**kwargs) -> DiT:
    prompt = dict(channels=3, length=8, patch_size=2, depth=1, num_heads=2)
    return tiny_dit(num_classes=0, prompt=prompt, **kwargs)


def test_a_prompt_dit_is_zero_at_init_and_reads_prompts_by_cross_attention() -> None:
    torch.manual_seed(0)
    model = prompt_dit()
    x, t = torch.randn(3, 4, 7, 7), torch.rand(3)
    prompts = with_presence(torch.randn(3, 3, 8))
    assert torch.count_nonzero(model(x, t, prompts)) == 0
    assert all(block.cross_attn is not None for block in model.blocks)
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    out = model(x, t, prompts)
    assert out.shape == x.shape
    other = model(x, t, with_presence(torch.randn(3, 3, 8)))
    assert not torch.allclose(out, other)  # the prompt matters
    null = model.null_condition(prompts)
    assert torch.equal(null, torch.zeros_like(prompts))
    dropped = model.drop_condition(prompts, torch.tensor([True, False, True]))
    assert torch.equal(dropped[1], prompts[1]) and torch.equal(dropped[0], null[0])
    # a null prompt is the learned null condition whatever latents it carries
    junk_null = torch.cat([torch.randn(3, 3, 8), torch.zeros(3, 1, 8)], dim=1)
    assert torch.allclose(model(x, t, junk_null), model(x, t, null))
    assert torch.allclose(model(x, t, None), model(x, t, null))


def test_guidance_with_prompts_contrasts_the_null_prompt() -> None:
    torch.manual_seed(0)
    model = prompt_dit()
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    x, t, y = torch.randn(2, 4, 7, 7), torch.tensor(0.4), with_presence(torch.randn(2, 3, 8))
    conditional, unconditional = model(x, t.expand(2), y), model(x, t.expand(2), model.null_condition(y))
    assert torch.allclose(guided(model, y, 1.0, model.null_condition(y))(x, t), conditional, atol=1e-6)
    assert torch.allclose(guided(model, y, 2.5, model.null_condition(y))(x, t), unconditional + 2.5 * (conditional - unconditional), atol=1e-5)


def test_prompt_and_class_conditioning_are_exclusive_and_flops_count_the_prompt_path() -> None:
    with pytest.raises(ValueError, match="classes or on prompts"):
        tiny_dit(num_classes=3, prompt=dict(channels=3, length=8, patch_size=2))
    plain, prompted = tiny_dit(num_classes=0), prompt_dit()
    assert prompted.flops_per_sample() > plain.flops_per_sample() + prompted.prompt_encoder.flops_per_sample() > plain.flops_per_sample()


def test_a_prompt_dit_learns_which_prompt_asks_for_which_mean() -> None:
    """Three prompt families (noisy latents around three centres) ask for data at -1, 0 and +1."""
    torch.manual_seed(0)
    model = DiT(input_size=[4], in_channels=2, patch_size=2, depth=2, hidden_size=64, num_heads=2, num_classes=0,
                prompt=dict(channels=2, length=4, patch_size=2, depth=1, num_heads=2))
    objective, optimizer = RectifiedFlow(), torch.optim.AdamW(model.parameters(), lr=3e-3)
    centres = torch.randn(3, 2, 4)

    def prompts_for(y: torch.Tensor) -> torch.Tensor:
        return with_presence(centres[y] + 0.3 * torch.randn(len(y), 2, 4))

    for _ in range(300):
        y = torch.randint(0, 3, (64,))
        x0 = (y.float() - 1.0).view(-1, 1, 1).expand(64, 2, 4) + 0.05 * torch.randn(64, 2, 4)
        loss = objective.loss(model, x0, model.drop_condition(prompts_for(y), torch.rand(64) < 0.1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    labels = torch.arange(3).repeat_interleave(16)
    prompts = prompts_for(labels)
    generator = torch.Generator().manual_seed(1)
    samples = objective.sample(guided(model, prompts, 2.0, model.null_condition(prompts)), torch.randn(48, 2, 4, generator=generator), 20, generator=generator)
    per_prompt = samples.mean(dim=(1, 2)).view(3, 16).mean(1)
    assert torch.allclose(per_prompt, torch.tensor([-1.0, 0.0, 1.0]), atol=0.25), per_prompt


def test_prompt_alignment_learns_which_latents_a_prompt_was_paired_with() -> None:
    """Four digits, eight pairs each, the prompts of a digit alike: the best is to tell the digits apart (a loss of log 8)."""
    torch.manual_seed(0)
    digits = torch.arange(32) % 4
    latents = digits.float().view(-1, 1, 1, 1) + 0.1 * torch.randn(32, 2, 3, 3)
    features = torch.nn.functional.one_hot(digits, 16).float()
    alignment = PromptAlignment([2, 3, 3], width=16, dim=8)
    optimizer = torch.optim.Adam(alignment.parameters(), lr=1e-2)
    assert alignment(features, latents).item() > math.log(8) + 1  # untrained: far from telling the digits apart
    for _ in range(150):
        loss = alignment(features, latents)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert math.log(8) - 1e-3 < alignment(features, latents).item() < math.log(8) + 0.15
    optimizer.zero_grad()
    none = alignment(features, latents, scored=torch.zeros(32, dtype=torch.bool))  # every prompt dropped: nothing to score
    none.backward()
    assert none.item() == 0.0 and all(p.grad is not None for p in alignment.parameters())


def test_alignment_is_for_prompt_dits() -> None:
    with pytest.raises(ValueError, match="alignment is for a DiT conditioned on prompts"):
        DiffusionModule(tiny_dit(num_classes=3), RectifiedFlow(), torch.zeros(3), torch.ones(3), alignment=PromptAlignment([4, 7, 7], 32))
