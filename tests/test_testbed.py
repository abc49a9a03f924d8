"""The testbed pair (real fine-tuned models): they load from the shipped adapters and cache, FLOPs add
up per stage, training writes adapters that load, and a missing or tampered adapter is one clear line.
Its quality (accuracy of each model, the judge's and the router's ROC-AUC) is measured by
benchmarks/testbed.py, not here."""

import json
import shutil

import pytest

from eval.synthetic import generate, gold_steps
from reasoning.backends import load_backend
from reasoning.errors import ModelSpecError
from reasoning.prompts import Prompt
from reasoning.specs import parse_spec
from reasoning.testbed import DATA_DIR, MANIFEST_FILE, SHARD_BYTES, adapter_key, read_manifest

pytestmark = pytest.mark.slow
PROBLEMS = generate(1, steps=3, seed=0, split="test")


@pytest.fixture(scope="module")
def pair():
    from reasoning.api import Solver

    return Solver("testbed-draft", "testbed-target", "specreason")


def test_aliases_load_from_adapters_and_cache(pair):
    from reasoning.backends.hf import testbed_dir

    for name in ("testbed-draft", "testbed-target"):
        m = read_manifest(DATA_DIR / name.removeprefix("testbed-"))
        folder = testbed_dir(parse_spec(name))
        assert (folder / ".complete").is_file() and folder.name.startswith(name + "-")
        assert json.loads((folder / "specstep-testbed.json").read_text())["files"] == m.files
        assert testbed_dir(parse_spec(name)) == folder  # cached: built once
    draft, target = pair.draft, pair.target
    assert draft.model.config.num_hidden_layers == read_manifest(DATA_DIR / "draft").layers < \
        target.model.config.num_hidden_layers == 30
    # the draft's head keeps only the task's tokens: its parameters are its layers plus that head
    assert draft.n_params < 0.4 * target.n_params
    assert sum(f.stat().st_size for f in DATA_DIR.rglob("*") if f.is_file()) < 30e6  # ships small
    assert max(f.stat().st_size for f in DATA_DIR.rglob("*.safetensors")) < SHARD_BYTES  # each file small


def test_the_drafts_pruned_head_scores_its_tokens_like_the_full_head(pair):
    import torch

    model = pair.draft.model
    m = read_manifest(DATA_DIR / "draft")
    head = model.get_output_embeddings()
    assert m.head_vocab == head.ids.numel() < 2000  # a few hundred of 49152 tokens
    ids = pair.draft.encode(gold_steps(PROBLEMS[0])[0] + "\n\n")
    assert set(ids) <= set(head.ids.tolist()) and pair.draft.eos_ids & set(head.ids.tolist())
    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state
        logits = model.lm_head(hidden)[0]
        full = hidden[0] @ model.get_input_embeddings().weight.t()  # the tied head it was trained with
    kept = torch.zeros(logits.shape[-1], dtype=torch.bool)
    kept[head.ids] = True
    assert torch.allclose(logits[:, kept], full[:, kept], atol=1e-4)
    assert (logits[:, ~kept] == -1e4).all()


def test_int8_storage_keeps_each_rank_component_to_its_scale():
    import torch

    from training.testbed import quantize

    t = torch.randn(6, 40) * torch.logspace(-3, 1, 6)[:, None]  # rank components of very different sizes
    for dim, x in ((0, t), (1, t.t().contiguous())):
        q, scale = quantize(x, dim)
        assert q.dtype == torch.int8 and scale.shape == ((6, 1) if dim == 0 else (1, 6))
        err = (q.float() * scale - x).abs()
        assert (err <= 0.5001 * scale).all()  # half a step of its own component's scale


def test_flops_add_up_per_stage(pair):
    sol = pair.solve(PROBLEMS[0], seed=0)
    d, t = pair.draft.n_params, pair.target.n_params
    c = sol.costs
    # every token a model ran: a generation's last sampled token is run (and charged) by the next call
    assert c.draft.flops == pytest.approx(2 * d * (c.draft.tokens - c.draft.calls))
    assert c.target.flops == pytest.approx(2 * t * (c.target.tokens - c.target.calls))
    assert c.judge.flops == pytest.approx(2 * t * c.judge.tokens)  # the target judges: no token sampled
    assert c.discarded.flops == pytest.approx(2 * d * (c.discarded.tokens - c.discarded.calls))
    assert c.flops == pytest.approx(c.draft.flops + c.judge.flops + c.target.flops)
    for stage in ("draft", "judge", "target"):
        assert c.stage(stage).flops == pytest.approx(sum(s.costs.stage(stage).flops for s in sol.steps))
    assert c.draft.flops > 0 and c.judge.flops > 0


@pytest.mark.parametrize("damage", ["missing", "tampered", "bad-manifest", "no-target-beside"])
def test_missing_or_tampered_adapter_is_one_line(cli, tmp_path, damage):
    folder = tmp_path / "draft"
    shutil.copytree(DATA_DIR / "draft", folder)
    first = folder / next(iter(read_manifest(folder).files))
    if damage == "missing":
        first.unlink()
        msg = "testbed adapter file missing"
    elif damage == "tampered":
        with first.open("r+b") as f:
            f.seek(1000)
            f.write(b"\x00\x01\x02\x03")
        msg = "does not match its manifest"
    elif damage == "bad-manifest":
        (folder / MANIFEST_FILE).write_text('{"format": "pickle"}')
        msg = "manifest"
    else:  # a draft without the target it was trained on
        msg = f"trained on testbed-target: its adapter must be beside it, in {tmp_path / 'target'}"
    with pytest.raises(ModelSpecError, match=msg):
        load_backend(f"testbed-draft?adapter={folder}")
    r = cli("solve", "--example", "--draft", f"testbed-draft?adapter={folder}", "--router", "draft-only")
    assert r.returncode == 2 and msg in r.error_line()


def test_fold_merges_the_whole_update_cut_to_its_rank():
    import torch
    from torch import nn

    from training.testbed import LoRALinear, fold

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 10))
    ref = {"0": model[0].weight.detach().clone()}
    model[0].weight.data += torch.randn(10, 12) * 0.1  # an earlier phase's update, already merged
    lora = LoRALinear(model[0], rank=3, alpha=6.0, gen=torch.Generator().manual_seed(1))
    nn.init.normal_(lora.lora_B)
    model[0] = lora
    want = (lora.base.weight + 2.0 * lora.lora_B @ lora.lora_A - ref["0"]).detach()
    for rank in (10, 2):
        m = nn.Sequential(LoRALinear(nn.Linear(12, 10), 3, 6.0, torch.Generator()))
        m[0].base.weight.data, m[0].lora_A.data, m[0].lora_B.data = (
            lora.base.weight.data.clone(), lora.lora_A.data.clone(), lora.lora_B.data.clone())
        (a, b), = fold(m, {"0": m[0]}, ref, rank).values()
        assert isinstance(m[0], nn.Linear) and a.shape == (rank, 12) and b.shape == (10, rank)  # unwrapped
        assert torch.allclose(m[0].weight, ref["0"] + b @ a, atol=1e-5)  # the layer now holds the stored update
        sv = torch.linalg.svdvals(want)
        # the stored update is the best rank-r approximation: its error is the dropped singular values
        assert float(torch.linalg.norm(want - b @ a)) == pytest.approx(float(sv[rank:].norm()), abs=1e-4)


@pytest.fixture
def merged_copies_removed(tmp_path):
    """Adapters trained in `tmp_path` are merged into the user cache when they load (about 0.5 GB each):
    remove those copies afterwards, so that test runs do not fill the cache."""
    from reasoning.specs import cache_dir

    yield
    for done in (cache_dir() / "hf").glob("testbed-*/.complete"):
        if done.read_text().startswith(str(tmp_path)):
            shutil.rmtree(done.parent, ignore_errors=True)


def test_testbed_training_writes_adapters_that_load(tmp_path, merged_copies_removed):
    from dataclasses import replace

    import torch

    from reasoning.testbed import load_tensors
    from training.testbed import TestbedConfig, train_testbed

    cfg = TestbedConfig(target_steps=1, draft_steps=1, draft_more=((1, 1e-3),), target_more=((1, 1e-3),), batch=1,
                        warmup=1, out=str(tmp_path), keep_phases=True, pool=20, style="written",
                        draft_judge_share=0.5)
    report = train_testbed(cfg)
    assert sorted(p.name for p in (tmp_path / "phases").iterdir()) == ["draft-1", "draft-2", "target-1", "target-2"]
    assert adapter_key(read_manifest(tmp_path / "phases" / "target-2" / "target")) == report["target"]["sha256"]
    assert adapter_key(read_manifest(tmp_path / "phases" / "draft-2" / "draft")) == report["draft"]["sha256"]
    for what in ("target", "draft"):
        m = read_manifest(tmp_path / what)
        assert adapter_key(m) == report[what]["sha256"] and report[what]["steps"] == 2
        assert m.step_style == "written"  # the benchmarks read it to write gold prefixes the model knows
        assert m.trained["judge_share"] == (0.5 if what == "draft" else cfg.judge_share)
        assert json.loads((tmp_path / what / "training.json").read_text())["history"]
    b = load_backend(f"testbed-draft?adapter={tmp_path / 'draft'}")
    assert b.model.config.num_hidden_layers == cfg.draft_layers
    assert b.open_session(Prompt.math(PROBLEMS[0].question, 0)).generate(max_tokens=3).token_ids
    assert b.model.lm_head.ids.numel() == read_manifest(tmp_path / "draft").head_vocab  # the task's tokens
    from eval.synthetic import generate, gold_solution

    # the pruned head holds every token of the style it was trained on (long divisions' ':' and ',' too)
    written = next(p for p in generate(50, steps=3, seed=0, split="train") if ":" in gold_solution(p, style="written"))
    assert set(b.encode(gold_solution(written, style="written"))) <= set(b.model.lm_head.ids.tolist())
    # the draft's update applies to the target beside it (the one it was trained on), not the shipped one
    name = "model.layers.0.self_attn.q_proj"
    d = load_tensors(tmp_path / "draft", read_manifest(tmp_path / "draft"))
    t = load_backend(f"testbed-target?adapter={tmp_path / 'target'}").model.get_parameter(name + ".weight")
    want = t + d[name + ".lora_B"] @ d[name + ".lora_A"]
    assert torch.allclose(b.model.get_parameter(name + ".weight"), want, atol=1e-6)
    # resume: a config with one more target phase trains only that phase, from the stored adapter
    before = read_manifest(tmp_path / "target")
    cfg.target_more = ((1, 1e-3), (1, 1e-3))
    again = train_testbed(cfg, only="target", resume=True)["target"]
    assert [h["phase"] for h in again["history"]] == [0, 1, 2] and again["steps"] == 3
    assert read_manifest(tmp_path / "target").files != before.files
    assert train_testbed(cfg, only="target", resume=True) == {}  # nothing left to train
    # a run that never stopped writes the same adapter as one stopped after each phase and resumed
    whole = replace(cfg, out=str(tmp_path / "whole"), keep_phases=False)
    assert train_testbed(whole, only="target")["target"]["sha256"] == again["sha256"]
    # re-sharding keeps every tensor bit for bit, and every file (header included) under the limit
    from training.testbed import reshard

    folder = tmp_path / "target"
    before = load_tensors(folder, read_manifest(folder))
    m = reshard(folder)
    after = load_tensors(folder, read_manifest(folder))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all((folder / f).stat().st_size < SHARD_BYTES for f in m.files)


def test_the_readme_example_escalates_every_wrong_draft_step_and_is_right(pair):
    """The README's first command, through the Python API: the shipped router is picked for the testbed
    pair without model=, at the escalation rate chosen on validation problems (0.3) it escalates every
    draft step that is wrong, and the answer is right where the draft alone is wrong."""
    from eval.synthetic import check_step
    from reasoning.api import Solver
    from routers.arbitrage import SHIPPED
    from specstep.cli import TESTBED_EXAMPLE

    p = generate(TESTBED_EXAMPLE + 1, steps=3, seed=0, split="test")[TESTBED_EXAMPLE]
    s = Solver("testbed-draft", "testbed-target", "arbitrage", router_options={"escalation_rate": 0.3},
               step_tokens=96, max_tokens=512)
    assert s.router.model_dir == SHIPPED["testbed"]
    sol = s.solve(p)
    wrong = [i for i, st in enumerate(sol.steps[:-1]) if not check_step(p, i, st.draft_text)]
    escalated = [i for i, st in enumerate(sol.steps) if st.decision == "escalate"]
    assert wrong and set(wrong) <= set(escalated) and sol.answer == p.gold, [(st.author, st.text) for st in sol.steps]
    assert all(check_step(p, i, sol.steps[i].text) for i in escalated)
    assert sol.steps[-1].author == "draft"  # the answer step is kept
    alone = Solver("testbed-draft", "testbed-target", "draft-only", step_tokens=96, max_tokens=512).solve(p)
    assert alone.answer != p.gold


def test_low_rank_svd_equals_the_full_svd_on_a_low_rank_update():
    import torch

    from training.testbed import low_rank_svd

    g = torch.Generator().manual_seed(1)
    m = torch.randn(1536, 40, generator=g) @ torch.randn(40, 576, generator=g) * 0.01  # a rank-40 update
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    u2, s2, vh2 = low_rank_svd(m, 40)
    assert torch.allclose(s2[:40], s[:40], rtol=1e-4, atol=1e-6)
    cut, cut2 = (u[:, :24] * s[:24]) @ vh[:24], (u2[:, :24] * s2[:24]) @ vh2[:24]  # the stored truncation
    assert torch.allclose(cut2, cut, atol=1e-5 * float(cut.abs().max()))
    assert torch.allclose((u2[:, :40] * s2[:40]) @ vh2[:40], m, atol=1e-5 * float(m.abs().max()))


def test_the_shipped_target_is_v4_written_whose_first_phases_are_v2_and_v3_written():
    """The shipped target is v4-written's nine phases; v2-written's five and v3-written's seven are its
    first phases, so `--resume` over an earlier recipe's target trains only the phases it lacks."""
    from dataclasses import asdict

    from training.testbed import RECIPES, TestbedConfig, phases_done

    v2, v3 = asdict(RECIPES["v2-written"]), asdict(RECIPES["v3-written"])
    assert v3.pop("target_more")[:-2] == v2.pop("target_more") and v3 == v2
    focus = asdict(RECIPES["v3-focus"])  # v3-written's phase 6, with focus examples in it only
    assert focus.pop("target_more") == RECIPES["v3-written"].target_more[:-1]
    assert focus.pop("target_focus") == (0.0,) * 5 + (0.4,) and v2.pop("target_focus") == () and focus == v2
    v4 = asdict(RECIPES["v4-written"])  # v3-written's seven phases, then two more
    assert v4.pop("target_more")[:-2] == RECIPES["v3-written"].target_more and v4.pop("target_focus") == ()
    assert v4 == v2
    done, _ = phases_done(DATA_DIR / "target")
    shipped = json.loads(read_manifest(DATA_DIR / "target").trained["config"])
    assert done == 1 + len(RECIPES["v4-written"].target_more) == 9
    want = json.loads(json.dumps(asdict(RECIPES["v4-written"])))  # tuples as lists, as stored
    # fields added since hold their defaults, which train as before they existed
    assert all(want[k] == json.loads(json.dumps(asdict(TestbedConfig())[k])) for k in want.keys() - shipped.keys())
    assert {k: v for k, v in shipped.items() if k not in ("out", "keep_phases")} == \
        {k: v for k, v in want.items() if k in shipped and k not in ("out", "keep_phases")}
    draft = json.loads(read_manifest(DATA_DIR / "draft").trained["config"])  # the draft of that same run
    assert {k: v for k, v in draft.items() if k not in ("out", "keep_phases")} == \
        {k: v for k, v in shipped.items() if k not in ("out", "keep_phases")}


@pytest.mark.parametrize(("a", "sign", "k", "want"), [
    (214, "-", 21, True), (124, "-", 32, True), (24, "-", 14, False), (323, "-", 38, True), (81, "+", 34, True),
    (7, "+", 13, True), (318, "+", 12, True), (21, "+", 34, False), (124, "/", 4, True), (42, "/", 6, False),
    (36, "*", 7, False)])
def test_regroups_is_a_carry_or_borrow_at_any_digit_or_a_long_division(a, sign, k, want):
    from eval.synthetic import Op
    from training.testbed import regroups

    assert regroups(Op(a, sign, k)) is want


def test_focus_examples_label_one_regrouping_step_and_share_zero_changes_nothing(smol):
    """A focus example is one regrouping step after its gold prefix, the loss on that step alone; at
    share 0 the stream is the one from before focus examples existed (the shipped target's)."""
    import torch

    from eval.synthetic import operations
    from training.testbed import Examples, regroups

    def stream(**kw):
        ex = Examples(smol, 3, 0.3, pool=30, style="written", **kw)
        return [ex.batch(4) for _ in range(3)]

    plain, again = stream(), stream(focus_share=0.0)
    assert all(torch.equal(x, y) for a, b in zip(plain, again) for x, y in zip(a, b))
    ex = Examples(smol, 3, 0.0, pool=30, style="written", focus_share=1.0)
    seen = 0
    for ids, labels, mask in (ex.batch(4) for _ in range(3)):
        for row, lab, m in zip(ids, labels, mask):
            n = int(m.sum())
            kept = [int(t) for t, y in zip(row[:n], lab[:n]) if y != -100]
            text, prefix = smol.decode(kept), smol.decode([int(t) for t in row[: n - len(kept)]])
            p = next(p for p in ex.problems[max(ex.problems)] + [q for v in ex.problems.values() for q in v]
                     if smol.render(Prompt.math(p.question, 0)) in prefix)
            i = gold_steps(p, "written").index(text.removesuffix("\n\n"))
            assert regroups(operations(p)[i]) and text.endswith("\n\n")
            seen += 1
    assert seen == 12
    with pytest.raises(ValueError, match="focus share 0.8 must be in"):
        Examples(smol, 3, 0.3, pool=30, focus_share=0.8)


def test_testbed_steps_counts_each_operation_step_from_the_gold_prefix(tmp_path):
    """benchmarks/testbed_steps.py on the shipped target: one record per operation step of each problem, each
    checked against its gold step, the table's counts their sums; a missing adapter is one line, exit 2."""
    import subprocess
    import sys
    from pathlib import Path

    from eval.synthetic import Op, check_step, operations
    from training.testbed import regroups

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "testbed_steps.py"
    out = tmp_path / "steps.jsonl"
    r = subprocess.run([sys.executable, str(script), "--adapter", str(DATA_DIR / "target"), "--n", "2",
                        "--seed", "11", "--concurrency", "2", "--out", str(out)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    problems = {p.id: p for p in generate(2, steps=3, seed=11, split="train")}
    assert [(x["problem_id"], x["index"]) for x in rows] == [(i, k) for i in sorted(problems) for k in range(3)]
    for x in rows:
        p = problems[x["problem_id"]]
        op = operations(p)[x["index"]]
        assert (x["operation"], x["a"], x["k"]) == (op.sign, op.a, op.k) and x["regroups"] == regroups(op)
        assert x["right"] == check_step(p, x["index"], x["text"]) and x["gold"] == gold_steps(p, "written")[x["index"]]
    wrong = sum(not x["right"] for x in rows if x["regroups"])
    assert f"regrouping steps wrong: {wrong}/{sum(x['regroups'] for x in rows)}" in r.stdout
    assert regroups(Op(19, "+", 1)) and not regroups(Op(10, "+", 1))
    bad = subprocess.run([sys.executable, str(script), "--adapter", str(tmp_path / "nowhere")], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "--adapter" in bad.stderr and "no such folder" in bad.stderr.splitlines()[-1]
