"""Test-time search: the NFE counter, budget 1 = plain sampling for every method, SMC without
weights = independent sampling, EvoSearch's mutation keeps unit variance, noise
optimisation raises a differentiable reward, the errors, and every method on the tiny SD and
SD3 pipelines."""

import math

import pytest
import torch

from rewardlab.generators import load_generator
from rewardlab.generators.sampling import sample
from rewardlab.rewards.base import Reward, RewardOutput
from rewardlab.search import METHODS, BudgetError, nfe_per_sample, search
from rewardlab.search.budget import Spend
from rewardlab.search.evolutionary import mutate_noise, plan, tournament
from rewardlab.search.noise_opt import nesterov_step, shell_penalty
from rewardlab.search.rewriters import LLMRewriter, shapeworld
from rewardlab.search.smc import ess, log_potential

PROMPTS = ["a photo of a circle left of a square", "a photo of two red squares"]


class Brightness(Reward):
    """A differentiable toy reward: mean pixel value (prompt-blind)."""

    name = "brightness"
    differentiable = True

    def score(self, images, prompts, metadata):
        return RewardOutput(images.mean(dim=(1, 2, 3)))


@pytest.fixture(scope="module")
def gen(tiny_shapeworld_weights):
    return load_generator(f"shapeworld:{tiny_shapeworld_weights}")


def test_counter_counts_rows_guidance_twice_and_gradients_three_times(gen):
    assert nfe_per_sample(20, 3.0) == 40 and nfe_per_sample(20, 1.0) == 20
    for guidance, want in ((3.0, 2 * 3 * 2), (1.0, 2 * 3)):
        spend = Spend(10**6)
        with spend.counting(gen):
            sample(gen, PROMPTS, seeds=[0, 1], steps=3, guidance=guidance, stochastic=False)
        assert spend.nfe == want
    spend = Spend(10**6)
    with spend.counting(gen):
        sample(gen, PROMPTS[:1], seeds=[0], steps=2, guidance=1.0, stochastic=False, grad=True,
               noise=torch.randn(1, *gen.latent_shape(), requires_grad=True))
    assert spend.nfe == 2 * 3
    assert "denoise" not in vars(gen)  # the wrapper is gone afterwards


def test_counter_refuses_overspending(gen):
    spend = Spend(5)
    with pytest.raises(BudgetError, match="over its budget of 5"), spend.counting(gen):
        sample(gen, PROMPTS, seeds=[0, 1], steps=2, guidance=3.0, stochastic=False)


@pytest.mark.parametrize("method", list(METHODS))
def test_budget_one_is_plain_sampling(gen, method):
    res = search(method, gen, Brightness(), PROMPTS, 1, seed=7, steps=4)
    plain = sample(gen, PROMPTS, seeds=[7, 7], steps=4, stochastic=method == "smc").images
    torch.testing.assert_close(res.images, plain, rtol=0, atol=1e-5)
    assert res.seeds == [7, 7] and res.nfe == res.budget_nfe == 2 * 4 * 2


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("budget", [2, 3.5, 6])
def test_methods_stay_within_budget_and_return_their_best(gen, method, budget):
    res = search(method, gen, Brightness(), PROMPTS, budget, seed=0, steps=4, keep_candidates=True)
    assert res.nfe <= res.budget_nfe == int(budget * 8) * 2
    assert res.images.shape == (2, 3, 32, 32) and res.reward_calls >= 2
    for p in range(2):
        assert float(res.scores[p]) == pytest.approx(max(res.candidates[p]))
        torch.testing.assert_close(Brightness()(res.images[p:p + 1], PROMPTS[p:p + 1]).scores,
                                   res.scores[p:p + 1], atol=1e-5, rtol=0)
    assert res.trace[-1]["event"] == "done" and res.trace[-1]["nfe"] == res.nfe


@pytest.mark.parametrize("method", list(METHODS))
def test_fractional_budgets_at_many_steps_fit(gen, method):
    """Plans in fractions of a sample meet a limit rounded to whole NFEs (5.1 x 100 = 509.99...)."""
    res = search(method, gen, Brightness(), PROMPTS[:1], 5.1, seed=0, steps=50, guidance=1.0, batch_size=64)
    assert res.budget_nfe == 255 and res.nfe <= 255


def test_noise_opt_with_checkpointing_counts_a_backward_once(gen):
    plain = search("noise_opt", gen, Brightness(), PROMPTS, 8, seed=0, steps=4, lr=50.0, restarts=2)
    ckpt = search("noise_opt", gen, Brightness(), PROMPTS, 8, seed=0, steps=4, lr=50.0, restarts=2, checkpoint=True)
    assert ckpt.nfe == plain.nfe <= plain.budget_nfe
    torch.testing.assert_close(ckpt.images, plain.images, rtol=0, atol=1e-5)
    assert [t["seed"] for t in plain.trace if t["event"] == "restart"] == [0, 1]


def test_prompt_search_spends_the_remainder(gen):
    res = search("prompt_search", gen, Brightness(), PROMPTS[:1], 6, seed=0, steps=2, max_variants=3)
    assert res.trace[0]["counts"] == [4] and len(res.candidates[0]) == 6  # 2 + 2 + 1 + 1 seeds
    assert res.nfe == res.budget_nfe


def test_smc_final_resampling_as_the_reference(gen):
    res = search("smc", gen, Brightness(), PROMPTS, 4, seed=0, steps=4, every=2, final="resample", adaptive=True)
    weighed = [t["step"] for t in res.trace if t["event"] == "weighed"]
    assert weighed == [0, 2, 3]  # the schedule, then the last step with the correction
    best = search("smc", gen, Brightness(), PROMPTS, 4, seed=0, steps=4, every=2)
    assert [t["step"] for t in best.trace if t["event"] == "weighed"] == [0, 2]


def test_best_of_n_beats_its_first_candidate_and_is_nested(gen):
    res = search("best_of_n", gen, Brightness(), PROMPTS, 6, seed=3, steps=3, keep_candidates=True)
    small = search("best_of_n", gen, Brightness(), PROMPTS, 3, seed=3, steps=3, keep_candidates=True)
    for p in range(2):
        assert small.candidates[p] == pytest.approx(res.candidates[p][:3])  # seeds 3, 4, 5 both times
        assert float(res.scores[p]) >= float(small.scores[p])


def test_smc_without_weights_or_resampling_is_independent_sampling(gen):
    res = search("smc", gen, Brightness(), PROMPTS, 4, seed=11, steps=4, lam=0.0, resample=False,
                 keep_candidates=True)
    ind = sample(gen, [p for p in PROMPTS for _ in range(4)], seeds=[11 + k for _ in PROMPTS for k in range(4)],
                 steps=4, stochastic=True).images
    torch.testing.assert_close(torch.cat(res.candidate_images), ind, rtol=0, atol=1e-5)
    assert res.seeds == [11 + int(torch.tensor(c).argmax()) for c in res.candidates]


def test_smc_with_a_strong_potential_resamples_towards_the_reward(gen):
    res = search("smc", gen, Brightness(), PROMPTS, 6, seed=0, steps=4, lam=1e4, every=1, potential="rt")
    events = [t for t in res.trace if t["event"] == "weighed"]
    assert events
    assert events[0]["ess"] < 1.5  # λ = 1e4 on distinct particles: one carries all the weight
    assert res.seeds.count(None) >= 1  # a duplicated lineage is no longer its slot's seed
    flat = search("smc", gen, Brightness(), PROMPTS, 6, seed=0, steps=4, lam=0.0, every=1)
    assert all(t["ess"] == pytest.approx(6) for t in flat.trace if t["event"] == "weighed")


def test_potentials_by_hand():
    r, prev = torch.tensor([[0.5, 0.2]]), torch.tensor([[0.3, 0.4]])
    logw, carried = log_potential("max", r, prev, 2.0)
    torch.testing.assert_close(logw, torch.tensor([[1.0, 0.8]]))
    torch.testing.assert_close(carried, torch.tensor([[0.5, 0.4]]))
    logw, carried = log_potential("add", r, prev, 2.0)
    torch.testing.assert_close(logw, torch.tensor([[1.6, 1.2]]))
    torch.testing.assert_close(log_potential("diff", r, prev, 2.0)[0], torch.tensor([[0.4, -0.4]]))
    torch.testing.assert_close(log_potential("rt", r, prev, 2.0)[0], torch.tensor([[1.0, 0.4]]))
    torch.testing.assert_close(ess(torch.zeros(1, 4)), torch.tensor([4.0]))
    torch.testing.assert_close(ess(torch.tensor([[0.0, -math.inf, -math.inf]])), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="unknown potential"):
        log_potential("sum", r, prev, 1.0)


def test_evolutionary_mutation_keeps_unit_variance():
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(200_000, generator=g), torch.randn(200_000, generator=g)
    for beta in (0.1, 0.5, 0.9):
        y = mutate_noise(x, beta, eps)
        assert abs(float(y.var()) - 1) < 0.01 and abs(float(y.mean())) < 0.01
        assert float(torch.corrcoef(torch.stack([x, y]))[0, 1]) == pytest.approx(math.sqrt(1 - beta**2), abs=0.01)


def test_evolutionary_plan_and_tournament():
    assert plan(1, [0, 0, 5], 20, 0.5) == (1, [0, 0])
    n, children = plan(16, [0, 0, 5], 20, 0.5)
    assert n + children[0] + children[1] * 0.75 <= 16 and (n, children) == (8, [4, 5])
    scores = torch.tensor([0.0, 1.0, 2.0, 3.0])
    picks = tournament(scores, 1000, 4, torch.Generator().manual_seed(0))
    assert picks.float().mean() > 2.5  # the best of 4 draws is mostly the best individual
    assert set(tournament(scores, 1000, 1, torch.Generator().manual_seed(0)).tolist()) == {0, 1, 2, 3}


def test_noise_opt_raises_a_differentiable_reward(gen):
    base = search("best_of_n", gen, Brightness(), PROMPTS, 1, seed=0, steps=4)
    res = search("noise_opt", gen, Brightness(), PROMPTS, 8, seed=0, steps=4, opt_steps=4, lr=50.0, grad_clip=1.0)
    assert (res.scores > base.scores + 1e-3).all(), (res.scores, base.scores)
    assert len(res.info[0]["iterates"]) == int(7 * 8 // (4 * 2 * 3))
    assert res.seeds == [None, None]  # the noise moved away from its seed


def test_shell_penalty_and_nesterov_by_hand():
    z = torch.tensor([[3.0, 4.0]])  # ‖z‖ = 5, d = 2
    assert float(shell_penalty(z)) == pytest.approx(12.5 - math.log(5))
    zz, buf = torch.zeros(1, 2), torch.zeros(1, 2)
    nesterov_step(zz, torch.tensor([[3.0, 4.0]]), buf, lr=1.0, momentum=0.5, clip=1.0)
    # the gradient clipped to norm 1: g = (0.6, 0.8); buf = g; update = g + 0.5·buf = 1.5·g
    torch.testing.assert_close(zz, torch.tensor([[-0.9, -1.2]]))


def test_errors(gen):
    with pytest.raises(BudgetError, match="below one sample"):
        search("best_of_n", gen, Brightness(), PROMPTS, 0.5)
    with pytest.raises(ValueError, match="unknown search method 'beam'.*best_of_n"):
        search("beam", gen, Brightness(), PROMPTS, 2)
    from rewardlab.rewards import load

    with pytest.raises(ValueError, match="noise_opt needs a differentiable reward; 'shapeworld'"):
        search("noise_opt", gen, load("shapeworld"), PROMPTS, 4)
    with pytest.raises(ValueError, match="schedule must start at 0"):
        search("evolutionary", gen, Brightness(), PROMPTS, 4, schedule=(0.3, 0.5))
    with pytest.raises(ValueError, match="empty prompt"):
        search("prune", gen, Brightness(), ["a photo of a circle", " "], 2)


def test_shapeworld_rewriter_keeps_the_meaning():
    from rewardlab.world.records import parse_prompt

    variants = shapeworld("a photo of a circle left of a square")
    assert "a photo of a square right of a circle" in variants
    for v in shapeworld("a photo of a red circle and a blue square") + variants:
        rec = parse_prompt(v if v.startswith("a photo of") else "a photo of " + v)
        assert rec["tag"] in ("position", "color_attr")
    assert shapeworld("a photo of a red circle and a blue square")[0] == "a photo of a blue square and a red circle"
    assert shapeworld("no shapes here") == []


def test_prompt_search_scores_variants_against_the_original(gen):
    seen = []

    class Spy(Brightness):
        def score(self, images, prompts, metadata):
            seen.extend(prompts)
            return super().score(images, prompts, metadata)

    res = search("prompt_search", gen, Spy(), PROMPTS[:1], 4, seed=0, steps=2)
    assert set(seen) == {PROMPTS[0]}
    assert res.info[0]["variant"] in [PROMPTS[0], *shapeworld(PROMPTS[0])]
    assert res.trace[0]["counts"] == [4]  # the original and three rewrites, one seed each


# ---- the tiny SD / SD3 pipelines ---------------------------------------------------------
@pytest.fixture(scope="module")
def pipelines():
    from rewardlab.generators.diffusers_flow import SD3Generator
    from rewardlab.generators.diffusers_sd import StableDiffusionGenerator
    from tests.helpers.tiny_pipelines import tiny_sd, tiny_sd3

    torch.manual_seed(0)
    return {"sd": StableDiffusionGenerator(tiny_sd(), height=16, width=16),
            "sd3": SD3Generator(tiny_sd3(), height=16, width=16, max_sequence_length=16)}


@pytest.mark.parametrize("kind", ["sd", "sd3"])
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_on_tiny_pipelines(pipelines, kind, method):
    gen = pipelines[kind]
    opts = {"opt_steps": 1} if method == "noise_opt" else {}  # a 1-step differentiable sampler
    res = search(method, gen, Brightness(), ["a cat", "a red dog"], 3, seed=0, steps=3, guidance=2.0, **opts)
    assert res.images.shape == (2, 3, 16, 16) and torch.isfinite(res.scores).all()
    assert res.budget_nfe == 3 * 6 * 2 and res.nfe >= (0.5 if method == "evolutionary" else 0.75) * res.budget_nfe
    one = search(method, gen, Brightness(), ["a cat"], 1, seed=5, steps=3, guidance=2.0)
    torch.testing.assert_close(one.images, sample(gen, ["a cat"], seeds=[5], steps=3, guidance=2.0,
                                                  stochastic=method == "smc").images, rtol=0, atol=1e-4)


def test_llm_rewriter_with_a_tiny_random_model(tmp_path, pipelines):
    from tests.helpers.tiny_lm import tiny_lm_dir

    rewriter = LLMRewriter(str(tiny_lm_dir(tmp_path / "lm")), n=3, max_new_tokens=6)
    variants = rewriter("a red dog")
    assert len(variants) <= 3 and all(isinstance(v, str) and "\n" not in v for v in variants)
    assert rewriter("a red dog") == variants  # seeded
    res = search("prompt_search", pipelines["sd"], Brightness(), ["a red dog"], 3, seed=0, steps=2,
                 rewriter=rewriter)
    assert res.info[0]["variant"] in ["a red dog", *variants]


def test_best_of_n_with_a_target_stops_early_on_the_same_image(gen):
    full = search("best_of_n", gen, Brightness(), PROMPTS, 6, seed=2, steps=3, keep_candidates=True)
    target = sorted(full.candidates[0])[-2]  # the second best of prompt 0: reached before its best, maybe
    stop = search("best_of_n", gen, Brightness(), PROMPTS, 6, seed=2, steps=3, target=target)
    first = next(k for k, c in enumerate(full.candidates[0]) if c >= target)
    assert len(stop.candidates[0]) == first + 1 and stop.nfe < full.nfe
    assert stop.candidates[0] == pytest.approx(full.candidates[0][:first + 1])
    never = search("best_of_n", gen, Brightness(), PROMPTS, 6, seed=2, steps=3, target=2.0)
    torch.testing.assert_close(never.images, full.images, rtol=0, atol=1e-5)
    assert never.nfe == full.nfe


# ---- the command line --------------------------------------------------------------------
def test_cli_search_writes_ranked_candidates_and_trace(tmp_path, tiny_shapeworld_weights):
    import json

    from typer.testing import CliRunner

    from rewardlab.cli import app

    out = tmp_path / "s"
    args = ["search", "a photo of a circle left of a square", "--method", "smc", "--budget", "3", "--steps", "3",
            "--weights", str(tiny_shapeworld_weights), "--opt", "lam=5", "--opt", "potential=diff", "-o", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    trace = json.loads((out / "trace.json").read_text())
    assert trace["method"] == "smc" and trace["nfe"] <= trace["budget_nfe"] == 3 * 3 * 2
    ranked = trace["prompts"][0]["ranked"]
    assert len(ranked) == 3 and ranked[0]["score"] == max(r["score"] for r in ranked)
    assert all((out / r["file"]).exists() for r in ranked) and (out / "best.png").exists()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output


@pytest.mark.parametrize("extra, message", [
    (["--method", "beam"], "unknown search method 'beam'"),
    (["--method", "smc", "--opt", "lamda=3"], "smc has no option 'lamda'; its options: lam"),
    (["--method", "noise_opt"], "noise_opt needs a differentiable reward"),
    (["--budget", "0.5"], "greater than or equal to 1"),
    (["--reward", "nope"], "nope"),
])
def test_cli_search_errors(tmp_path, tiny_shapeworld_weights, extra, message):
    from typer.testing import CliRunner

    from rewardlab.cli import app

    r = CliRunner().invoke(app, ["search", "a photo of a circle", "--weights", str(tiny_shapeworld_weights),
                                 "-o", str(tmp_path / "s"), *extra])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "s" / "trace.json").exists()


def test_monitors_are_logged_per_scoring_round_outside_the_budget(gen, tmp_path):
    import json

    from rewardlab.eval.hacking import read_log

    class Darkness(Brightness):
        name = "darkness"

        def score(self, images, prompts, metadata):
            return RewardOutput(1 - images.mean(dim=(1, 2, 3)))

    plain = search("prune", gen, Brightness(), PROMPTS, 4, steps=4)
    res = search("prune", gen, Brightness(), PROMPTS, 4, steps=4, monitors={"darkness": Darkness()})
    assert res.nfe == plain.nfe and res.reward_calls == plain.reward_calls  # observation is free
    assert torch.equal(res.images, plain.images)
    scored = [e for e in res.trace if e["event"] == "scored"]
    assert len(scored) == 2  # the check at 0.3 of the schedule, then the finished survivors
    for e in scored:
        assert e["score/darkness"] == pytest.approx(1 - e["reward_mean"], abs=1e-5)
        assert e["diversity"] > 0 and len(e["palette"]) == 12
    (tmp_path / "trace.json").write_text(json.dumps(res.summary()))
    rows = read_log(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2] and "score/darkness" in rows[0]
    assert not [e for e in plain.trace if e["event"] == "scored"]
