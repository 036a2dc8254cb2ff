"""End-to-end training through the mmengine Runner: loss goes down, kill + resume, third-party head."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from script_runner import run_script
from tiny import tiny_train_cfg

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _losses(runner) -> list[float]:
    return [float(x) for x in runner.message_hub.get_scalar("train/loss").data[0]]


def test_tiny_training_loss_goes_down_and_validation_scores(synth_root, tmp_path):
    from reseg.engine.runner import build_runner

    cfg = tiny_train_cfg(synth_root, str(tmp_path / "tok"), str(tmp_path / "work"), max_iters=30,
                         batch_size=4, ckpt_interval=30)
    runner = build_runner(cfg)
    runner.train()
    losses = _losses(runner)
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, f"loss did not go down: {first:.3f} -> {last:.3f}"
    val = runner.val_loop.run()
    assert 0.0 <= val["seg/gIoU"] <= 1.0 and val["seg/n_queries"] > 0
    assert {"seg/synthref/gIoU", "seg/ReasonSeg/gIoU"} <= set(val)


def _write_cfg(cfg, path: Path) -> str:
    cfg.dump(str(path))
    return str(path)


def _train_cmd(cfg_path: str, *extra: str) -> list[str]:
    return [PY, str(ROOT / "tools" / "train.py"), cfg_path, *extra]


def _env(**extra: str) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def _resume_cfg(synth_root, tmp_path, work: Path) -> str:
    """40 iterations, a checkpoint every 4, validation at the end, LoRA dropout on (so torch's RNG matters)."""
    cfg = tiny_train_cfg(synth_root, str(tmp_path / "tok"), str(work), max_iters=40, batch_size=2, ckpt_interval=4)
    cfg.train_cfg.val_interval = 40
    cfg.model.lmm.lora = dict(r=4, lora_alpha=8, lora_dropout=0.2)
    cfg.randomness = dict(seed=0, deterministic=True)
    cfg.visualizer = dict(type="Visualizer", vis_backends=[dict(type="LocalVisBackend")])
    return _write_cfg(cfg, tmp_path / f"{work.name}.py")


def _final_val(work: Path) -> dict:
    rows = [json.loads(x) for p in work.glob("*/vis_data/scalars.json") for x in p.read_text().splitlines()]
    return [r for r in rows if "seg/gIoU" in r][-1]


def test_killed_run_resumes_exactly_as_if_it_had_not_been_killed(synth_root, tmp_path):
    """SIGKILL a real tools/train.py mid-iteration, --resume: the same weights and metrics as an
    uninterrupted run (an exact resume); the work dir is protected without --resume."""
    work = tmp_path / "work"
    path = _resume_cfg(synth_root, tmp_path, work)
    proc = subprocess.Popen(_train_cmd(path), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    last = work / "last_checkpoint"  # written once a checkpoint is complete
    while not (last.exists() and last.read_text().strip().endswith("iter_8.pth")):
        assert proc.poll() is None, f"training exited early:\n{proc.stdout.read()}"
        assert time.time() < deadline, "no checkpoint at iteration 8 in time"
        time.sleep(0.05)
    time.sleep(0.7)  # land between checkpoints, in the middle of an iteration
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed_from = max(int(p.stem.split("_")[1]) for p in work.glob("iter_*.pth"))
    assert 8 <= resumed_from < 40 and not (work / "iter_40.pth").exists()
    assert json.loads((work / "run_report.json").read_text())["git"]["commit"]  # the determinism report

    # Without --resume the work dir is protected.
    again = subprocess.run(_train_cmd(path), cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert again.returncode != 0 and "--resume" in again.stderr

    done = subprocess.run(_train_cmd(path, "--resume"), cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert f"resumed epoch: 0, iter: {resumed_from}" in log
    assert (work / f"run_report.resume-iter_{resumed_from}.json").exists()
    resumed = torch.load(work / "iter_40.pth", map_location="cpu", weights_only=True)  # plain, safe
    assert resumed["meta"]["iter"] == 40

    straight = tmp_path / "straight"
    ref = subprocess.run(_train_cmd(_resume_cfg(synth_root, tmp_path, straight)), cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    expected = torch.load(straight / "iter_40.pth", map_location="cpu", weights_only=True)["state_dict"]
    got = resumed["state_dict"]
    assert got.keys() == expected.keys()
    differ = [k for k in got if not torch.equal(got[k], expected[k])]
    assert not differ, f"{len(differ)} tensors differ after resume, e.g. {differ[:3]}"
    val_resumed, val_straight = _final_val(work), _final_val(straight)
    assert {k: v for k, v in val_resumed.items() if k.startswith("seg/")} == \
        {k: v for k, v in val_straight.items() if k.startswith("seg/")}


def test_thirdparty_head_plugin_trains_and_evaluates_with_the_same_tools(synth_root, tmp_path):
    """The complete head of docs/write_a_head_plugin.md, installed as its own distribution: tools/train.py
    trains it and tools/test.py scores it, with no other plugin loaded."""
    from test_plugins import _install_fixtures

    site = _install_fixtures(tmp_path / "plugins")
    work = tmp_path / "work"
    cfg = tiny_train_cfg(synth_root, str(tmp_path / "tok"), str(work), max_iters=3, batch_size=2,
                         head="ThirdPartyHead", ckpt_interval=3)
    cfg.train_cfg.val_interval = 1000
    root = str(synth_root) + "/refer_seg"
    cfg.test_dataloader = dict(cfg.val_dataloader, dataset=dict(
        type="GRefCOCODataset", data_root=root, dataset="grefcoco_synth", split="val", test_mode=True))
    cfg.test_evaluator = dict(type="GRESMetric", prefix="gres", pred_exists="flag")
    cfg.test_cfg = dict(type="TestLoop")
    path = _write_cfg(cfg, tmp_path / "cfg.py")
    env = _env(PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), RESEG_PLUGINS="myhead")
    done = subprocess.run(_train_cmd(path), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sd = torch.load(work / "iter_3.pth", map_location="cpu", weights_only=True)["state_dict"]
    assert any(k.startswith("head.prompt.") for k in sd) and any(k.startswith("head.exists.") for k in sd)
    out = tmp_path / "metrics.json"
    test = subprocess.run([PY, str(ROOT / "tools" / "test.py"), path, str(work / "iter_3.pth"), "--work-dir",
                           str(tmp_path / "test"), "--out-metrics", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert test.returncode == 0, test.stdout[-3000:] + test.stderr[-3000:]
    gres = json.loads(out.read_text())["benchmarks"]["gres"]
    assert 0.0 <= gres["gIoU"] <= 1.0 and gres["TP"] + gres["FN"] > 0  # no-target queries were scored


def test_a_builtin_plugin_trains_alone(synth_root, tmp_path):
    """READ stands alone: with only its entry point loaded (no LISA), tools/train.py trains it."""
    work = tmp_path / "work"
    cfg = tiny_train_cfg(synth_root, str(tmp_path / "tok"), str(work), max_iters=2, batch_size=2,
                         head="READHead", ckpt_interval=2)
    cfg.model.head.update(num_points=4, down_sample=1)
    cfg.train_cfg.val_interval = 1000
    path = _write_cfg(cfg, tmp_path / "cfg.py")
    done = subprocess.run(_train_cmd(path), cwd=ROOT, env=_env(RESEG_PLUGINS="read"), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (work / "iter_2.pth").exists()
    probe = subprocess.run([PY, "-c", "from reseg import plugins; plugins.load_plugins(); "
                            "print(sorted(p.name for p in plugins.loaded_plugins()))"],
                           cwd=ROOT, env=_env(RESEG_PLUGINS="read"), capture_output=True, text=True, timeout=120)
    assert probe.stdout.strip() == "['read']", probe.stderr


def _pretrain_tiny_tool():
    """The code of tools/research/pretrain_tiny.py."""
    from reseg.research import pretrain_tiny

    return pretrain_tiny


def test_pretrain_tiny_writes_weights_the_tiny_config_loads(synth_root, tmp_path):
    pretrain_tiny = _pretrain_tiny_tool()
    out = tmp_path / "tiny_models"
    cfg = str(ROOT / "configs" / "lisa" / "lisa_tiny_synthref.py")
    assert pretrain_tiny.main(["--data", str(synth_root), "--out", str(out), "--config", cfg, "--steps", "2",
                               "--vision-steps", "2", "--batch", "2", "--vision-batch", "2",
                               "--parts", "vision,sam,llava", "--llava-steps", "2", "--llava-batch", "2",
                               "--llava-copy-share", "0.5"]) == 0
    from mmengine.config import Config

    from reseg.registry import MODELS

    c = Config.fromfile(cfg)
    c.model.lmm.tiny.tokenizer_dir = str(tmp_path / "tok")
    c.model.lmm.tiny.vision_checkpoint = str(out / "vision_tiny.pth")
    c.model.mask_source.checkpoint = str(out / "sam_tiny.pth")
    c.model.lmm.tiny.checkpoint = str(out / "llava_tiny.pth")
    model = MODELS.build(c.model)  # strict loads: architectures match the config
    sd = torch.load(out / "sam_tiny.pth", weights_only=True)
    assert torch.equal(model.mask_source.sam.mask_decoder.iou_token.weight, sd["mask_decoder.iou_token.weight"])
    llava = torch.load(out / "llava_tiny.pth", weights_only=True)
    vision = torch.load(out / "vision_tiny.pth", weights_only=True)
    key = "model.multi_modal_projector.linear_1.weight"
    assert torch.equal(model.lmm.model.state_dict()[key], llava[key])  # the pre-trained projector
    # the llava part starts from the pre-trained tower and keeps it frozen
    assert all(torch.equal(llava["model.vision_tower." + k], v) for k, v in vision.items())


def test_attribute_prompt_target_is_every_object_matching_the_named_fields():
    pretrain_tiny = _pretrain_tiny_tool()
    masks = np.zeros((4, 4, 4), bool)
    for n in range(4):
        masks[n, n, n] = True  # object n is the pixel (n, n)
    labels = [("red", "circle"), ("red", "star"), ("blue", "circle"), ("red", "circle")]
    on = lambda m: sorted(int(y) for y in np.nonzero(m)[0])  # noqa: E731
    assert on(pretrain_tiny.attribute_target(masks, labels, 0, "colour")) == [0, 1, 3]
    assert on(pretrain_tiny.attribute_target(masks, labels, 0, "shape")) == [0, 2, 3]
    assert on(pretrain_tiny.attribute_target(masks, labels, 0, "both")) == [0, 3]
    assert on(pretrain_tiny.attribute_target(masks, labels, 2, "both")) == [2]
    with pytest.raises(ValueError, match="'size'"):
        pretrain_tiny.attribute_target(masks, labels, 0, "size")
    with pytest.raises(ValueError, match="'any'"):  # "any" only exists for located prompts
        pretrain_tiny.attribute_target(masks, labels, 0, "any")


def test_located_prompt_target_is_the_matching_object_nearest_the_anchor():
    """--sam-located-share: an anchor picks one object among those the attribute names."""
    pretrain_tiny = _pretrain_tiny_tool()
    masks = np.zeros((4, 10, 10), bool)
    masks[0, 1:3, 1:3] = True  # red circle, top left
    masks[1, 1:3, 7:9] = True  # red star, top right
    masks[2, 7:9, 1:3] = True  # blue circle, bottom left
    masks[3, 7:9, 7:9] = True  # red circle, bottom right
    labels = [("red", "circle"), ("red", "star"), ("blue", "circle"), ("red", "circle")]
    pick = lambda j, field, anchor: int(np.flatnonzero([  # noqa: E731
        np.array_equal(pretrain_tiny.located_target(masks, labels, j, field, anchor), m) for m in masks])[0])
    far_left, far_bottom = (-20.0, 5.0), (5.0, 40.0)
    assert pick(3, "both", far_left) == 0  # the leftmost red circle, though built from object 3
    assert pick(3, "both", far_bottom) == 3
    assert pick(1, "colour", (9.5, 9.5)) == 3  # red objects: the one at the bottom right corner
    assert pick(1, "shape", far_left) == 1  # the only star, wherever the anchor
    assert pick(0, "any", (2.0, 8.0)) == 2  # any object: the one under the anchor
    assert pick(0, "shape", (2.0, 8.0)) == 2  # circles: the blue one is nearest
    assert pick(3, "colour", (2.0, 8.0)) == 0  # red: top left and bottom right are equally near; lower index
    hidden = masks.copy()
    hidden[2] = False  # an object without visible pixels is never picked
    assert np.array_equal(pretrain_tiny.located_target(hidden, labels, 0, "any", (2.0, 9.0)), masks[3])
    with pytest.raises(ValueError, match="no object matching"):
        pretrain_tiny.located_target(hidden, labels, 2, "both", (0.0, 0.0))


def test_demo_sam_pretraining_with_attribute_prompts_loads_into_the_demo_config(synth_root, tmp_path):
    """`make pretrain-demo`'s SAM step (128 px, attribute prompts) writes what the demo config loads."""
    pretrain_tiny = _pretrain_tiny_tool()
    out = tmp_path / "sam128_attr"
    base = str(ROOT / "configs" / "lisa" / "lisa_tiny-rsam128_synthref.py")
    assert pretrain_tiny.main(["--data", str(synth_root), "--out", str(out), "--config", base, "--parts", "sam",
                               "--steps", "2", "--batch", "2", "--sam-aux-weight", "2.0",
                               "--sam-attr-prompts"]) == 0
    from mmengine.config import Config

    from reseg.registry import MODELS

    c = Config.fromfile(str(ROOT / "configs" / "lisa" / "lisa_tiny-sam128_synthref.py"))
    assert c.model.mask_source.checkpoint.endswith("sam128_attr/sam_tiny.pth")
    c.model.lmm.tiny.tokenizer_dir = str(tmp_path / "tok")
    c.model.lmm.tiny.vision_checkpoint = None
    c.model.mask_source.checkpoint = str(out / "sam_tiny.pth")
    model = MODELS.build(c.model)  # a strict load: the architecture matches the demo config's
    sd = torch.load(out / "sam_tiny.pth", weights_only=True)
    assert not any(k.startswith(("colour", "shape")) for k in sd)  # prompt embeddings and aux heads dropped
    info = json.loads((out / "sam_tiny.json").read_text())  # what produced the weights
    assert info["attr_prompts"] is True and info["aux_weight"] == 2.0 and info["steps"] == 2
    enc = model.mask_source.sam.image_encoder
    assert torch.equal(enc.patch_embed.proj.weight, sd["image_encoder.patch_embed.proj.weight"])
    assert enc.patch_embed.proj.weight.shape[-1] == 8 and model.mask_source.image_size == 128
    assert not any(p.requires_grad for p in enc.parameters())  # frozen in LISA training, as is the decoder
    assert not any(p.requires_grad for p in model.mask_source.sam.mask_decoder.parameters())
    dec = model.mask_source.sam.mask_decoder
    assert torch.equal(dec.output_hypernetworks_mlps[0].layers[0].weight,
                       sd["mask_decoder.output_hypernetworks_mlps.0.layers.0.weight"])


def test_located_attribute_prompts_train_and_are_recorded(synth_root, tmp_path, capsys):
    """--sam-located-share 1.0: every attribute prompt carries an anchor; the share is recorded, and a
    bad share or a share without attribute prompts is refused naming the flag."""
    pretrain_tiny = _pretrain_tiny_tool()
    base = str(ROOT / "configs" / "lisa" / "lisa_tiny-rsam128_synthref.py")
    args = ["--data", str(synth_root), "--config", base, "--parts", "sam", "--steps", "2", "--batch", "2"]
    out = tmp_path / "loc"
    assert pretrain_tiny.main(args + ["--out", str(out), "--sam-attr-prompts", "--sam-located-share", "1.0"]) == 0
    info = json.loads((out / "sam_tiny.json").read_text())
    assert info["located_share"] == 1.0 and info["attr_prompts"] is True and np.isfinite(info["final_loss"])
    for bad, message in ((["--sam-attr-prompts", "--sam-located-share", "1.5"], "expected a share in"),
                         (["--sam-located-share", "0.5"], "needs --sam-attr-prompts")):
        with pytest.raises(SystemExit):
            pretrain_tiny.main(args + ["--out", str(tmp_path / "bad")] + bad)
        err = capsys.readouterr().err
        assert "--sam-located-share" in err and message in err
        assert not (tmp_path / "bad").exists()


def test_one_test_call_scores_every_benchmark_and_writes_metrics_json(synth_root, tmp_path):
    """tools/test.py on RES, ReasonSeg, GRES and FP splits at once: one table each, JSON with counts."""
    import json

    from reseg.engine.runner import build_runner

    work = tmp_path / "work"
    cfg = tiny_train_cfg(synth_root, str(tmp_path / "tok"), str(work), max_iters=2, batch_size=2, ckpt_interval=2)
    cfg.train_cfg.val_interval = 1000
    build_runner(cfg).train()
    root = str(synth_root) + "/refer_seg"
    cfg.test_dataloader = dict(
        batch_size=4, num_workers=0, sampler=dict(type="DefaultSampler", shuffle=False),
        collate_fn=dict(type="reseg_collate"),
        dataset=dict(type="ConcatDataset", datasets=[
            dict(type="RefCOCODataset", data_root=root, dataset="synthref", split="val", test_mode=True),
            dict(type="ReasonSegDataset", data_root=str(synth_root) + "/reason_seg", split="val", test_mode=True),
            dict(type="GRefCOCODataset", data_root=root, dataset="grefcoco_synth", split="val", test_mode=True),
            dict(type="FPRefCOCODataset", data_root=root, dataset="fprefcoco_synth", split="val", test_mode=True)]))
    cfg.test_evaluator = [dict(type="SegIoUMetric", prefix="res", tasks=["res"]),
                          dict(type="SegIoUMetric", prefix="reasonseg", tasks=["reason"], split_by="is_sentence"),
                          dict(type="GRESMetric", prefix="gres", tasks=["gres"]),
                          dict(type="FalsePremiseMetric", prefix="fp", tasks=["fp"])]
    cfg.test_cfg = dict(type="TestLoop")
    path = _write_cfg(cfg, tmp_path / "cfg.py")
    out = tmp_path / "metrics.json"
    from reseg.tools import test as test_tool

    assert test_tool.main([path, str(work / "iter_2.pth"), "--work-dir", str(tmp_path / "test"),
                           "--out-metrics", str(out), "--baselines", "--show-dir", str(tmp_path / "vis")]) == 0
    result = json.loads(out.read_text())
    assert set(result["benchmarks"]) == {"res", "reasonseg", "gres", "fp"}
    assert result["benchmarks"]["gres"]["TP"] + result["benchmarks"]["gres"]["FN"] > 0  # no-target queries
    assert result["metrics"]["fp/n_false_premise"] > 0
    assert result["baselines"]["empty"]["res/gIoU"] == 0.0
    assert result["baselines"]["empty"]["gres/N-acc"] == 1.0  # predicting nothing rejects every query
    assert {c["metric"] for c in result["conventions"]} >= {"GRESMetric", "FalsePremiseMetric"}
    assert len(list((tmp_path / "vis").rglob("*.png"))) > 0


def test_a_nan_loss_stops_before_the_step_naming_iteration_and_samples(synth_root, tmp_path):
    from reseg.engine.runner import build_runner

    work = tmp_path / "work"
    cfg = tiny_train_cfg(synth_root, str(tmp_path / "tok"), str(work), max_iters=6, batch_size=2, ckpt_interval=2)
    cfg.train_cfg.val_interval = 1000
    runner = build_runner(cfg)
    head = runner.model.head
    real_loss = head.loss_by_feat
    calls = []

    def poisoned(outputs, targets, batch):
        out = real_loss(outputs, targets, batch)
        calls.append([s.sample_id for s in batch.samples])
        if len(calls) == 3:
            out["loss_mask_dice"] = out["loss_mask_dice"] * float("nan")
        return out

    head.loss_by_feat = poisoned
    with pytest.raises(FloatingPointError) as err:
        runner.train()
    msg = str(err.value)
    assert "iteration 3" in msg and "loss_mask_dice" in msg and str(calls[2]) in msg
    saved = torch.load(work / "iter_2.pth", map_location="cpu", weights_only=True)["state_dict"]
    now = runner.model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in saved.items())  # the NaN never reached the weights
    assert not (work / "iter_4.pth").exists()


def test_weights_export_to_safetensors_and_score_the_same(synth_root, tmp_path):
    """`reseg weights CKPT OUT.safetensors`; tools/test.py gives identical metrics from either file."""
    from reseg.cli import main as reseg_cli
    from reseg.engine.runner import build_runner

    work = tmp_path / "work"
    cfg = tiny_train_cfg(synth_root, str(tmp_path / "tok"), str(work), max_iters=2, batch_size=2, ckpt_interval=2)
    cfg.train_cfg.val_interval = 1000
    build_runner(cfg).train()
    cfg.test_dataloader = cfg.val_dataloader
    cfg.test_evaluator = cfg.val_evaluator
    cfg.test_cfg = dict(type="TestLoop")
    path = _write_cfg(cfg, tmp_path / "cfg.py")
    st = tmp_path / "model.safetensors"
    assert reseg_cli(["weights", str(work / "iter_2.pth"), str(st)]) == 0
    assert reseg_cli(["weights", str(work / "iter_2.pth"), str(st)]) == 2  # never overwritten silently
    from safetensors import safe_open

    with safe_open(str(st), "pt") as f:
        assert any(k.startswith("head.projection") for k in f.keys())  # noqa: SIM118 (safe_open is not iterable)
    from reseg.tools import test as test_tool

    results = []
    for ckpt in (work / "iter_2.pth", st):
        out = tmp_path / f"{ckpt.suffix[1:]}.json"
        assert test_tool.main([path, str(ckpt), "--work-dir", str(tmp_path / "t"), "--out-metrics", str(out)]) == 0
        results.append(json.loads(out.read_text())["metrics"])
    assert results[0] == results[1] and results[0]["seg/n_queries"] > 0


def test_benchmark_tool_measures_overhead_mfu_and_memory(synth_root, tmp_path):
    """tools/benchmark.py on the test-sized model: every subcommand runs and reports sane numbers."""
    cfg = tiny_train_cfg(synth_root, str(tmp_path / "tok"), str(tmp_path / "work"), max_iters=3, batch_size=2)
    path = _write_cfg(cfg, tmp_path / "cfg.py")
    out = tmp_path / "bench.jsonl"
    common = ["--work-dir", str(tmp_path / "bench"), "--out", str(out)]
    assert run_script("tools/benchmark.py", ["overhead", path, "--iters", "2", "--warmup", "1", *common]) == 0
    assert run_script("tools/benchmark.py", ["mfu", path, "--iters", "2", *common]) == 0
    assert run_script("tools/benchmark.py", ["memory", path, "--iters", "2", "--variant", "base",
                           "--variant", "checkpointing", "model.lmm.gradient_checkpointing=True", *common]) == 0
    overhead, mfu, memory = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(overhead["platform_s"]) == 2 and len(overhead["bare1_s"]) == 2 and overhead["ratio"] > 0
    assert mfu["flops_per_step"] > 0 and 0 < mfu["mfu"] < 2
    assert abs(sum(p["share"] for p in mfu["phases"].values()) - 1) < 0.01
    assert set(memory["variants"]) == {"base", "checkpointing"}
    assert all(v["peak_rss_mb"] >= v["built_rss_mb"] > 0 and v["step_s"] > 0 for v in memory["variants"].values())


def test_benchmark_prefix_compares_shared_unshared_and_per_conversation_steps(synth_root, tmp_path):
    """tools/benchmark.py prefix: LISA's recipe, 3 queries per image, the three ways on the same batches;
    sharing the image prefix cuts the LLM's FLOPs, LISA's per-conversation layout adds the tower's."""
    cfg = tiny_train_cfg(synth_root, str(tmp_path / "tok"), str(tmp_path / "work"), max_iters=3, batch_size=2)
    path = _write_cfg(cfg, tmp_path / "cfg.py")
    out = tmp_path / "bench.jsonl"
    assert run_script("tools/benchmark.py", ["prefix", path, "--iters", "2", "--warmup", "0",
                                             "--queries-per-image", "3", "--work-dir", str(tmp_path / "bench"),
                                             "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["queries_per_image"] == 3 and res["images_per_step"] == 2
    assert res["recipe"]["model.lmm.gradient_checkpointing"] is True
    ways = res["ways"]
    assert set(ways) == {"shared", "unshared", "per_conversation"}
    for row in ways.values():
        assert len(row["step_s"]) == 2 and row["median_step_s"] > 0
        assert 0 < row["llm_flops"] < row["flops_per_step"]
    assert ways["shared"]["llm_flops"] < ways["unshared"]["llm_flops"] == ways["per_conversation"]["llm_flops"]
    # the same LLM work; LISA's layout adds the vision tower on 6 conversations instead of 2 images
    assert ways["unshared"]["flops_per_step"] < ways["per_conversation"]["flops_per_step"]
    assert res["ratios"]["per_conversation_over_shared"]["flops"] > res["ratios"]["unshared_over_shared"]["flops"] > 1
    # under checkpointing the shared prefix keeps fewer states than the plain forward, never more
    assert 0 < ways["shared"]["peak_step_mb"] <= ways["unshared"]["peak_step_mb"]
    assert res["ratios"]["unshared_over_shared"]["peak_step_memory"] >= 1


def test_benchmark_prefix_flops_counts_the_prefix_once_per_image(tmp_path):
    """tools/benchmark.py prefix-flops (shapes only, on the meta device): the plain LLM's FLOPs grow with every
    conversation in full, the shared prefix's only by the part after the image."""
    out = tmp_path / "flops.jsonl"
    assert run_script("tools/benchmark.py", ["prefix-flops", "--scale", "small", "--queries-per-image", "1", "2", "3",
                                             "--images", "1", "--prefix-tokens", "20", "--suffix-tokens", "6",
                                             "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    llm = {q: res["results"][q]["llm_flops"] for q in ("1", "2", "3")}
    u1 = llm["1"]["unshared"]
    assert llm["2"]["unshared"] == 2 * u1 and llm["3"]["unshared"] == 3 * u1
    assert llm["1"]["shared"] == u1  # one conversation per image: the plain forward
    extra = llm["3"]["shared"] - llm["2"]["shared"]  # one more conversation of the same image
    assert 0 < extra < 0.5 * u1 and llm["2"]["shared"] < llm["2"]["unshared"]
    tower, sam = res["tower_flops_per_image"], res["sam_encoder_flops_per_image"]
    steps = res["results"]["3"]["step_flops"]
    assert steps["unshared"] == llm["3"]["unshared"] + tower + sam
    assert steps["per_conversation"] == llm["3"]["unshared"] + 3 * tower + sam
    assert res["results"]["1"]["saved_vs_unshared"] == 0 < res["results"]["3"]["saved_vs_unshared"]


@pytest.mark.parametrize("options, message", [
    # the model is built before this error: its environment and config go to the log file, not the console
    ([], "data/tiny_models/vision_tiny.pth' (config key model.lmm.tiny.vision_checkpoint)"),
    (["train_cfg.max_iter=3"], "train_cfg.max_iter: IterBasedTrainLoop takes no argument 'max_iter'; did you mean "
                               "train_cfg.max_iters?"),
    (["data_root=data/nope"], "train_dataloader.dataset.datasets.1.data_root='data/nope/reason_seg': no such folder"),
    (["train_cfg.max_iters", "3"], "--cfg-options 'train_cfg.max_iters' has no '='"),
])
def test_a_failing_training_prints_its_cause_in_one_line(synth_root, tmp_path, options, message):
    """Issues 29.10 and 29.11: no traceback, and not ~300 lines of environment and config before the cause."""
    cmd = [sys.executable, str(ROOT / "tools" / "train.py"), str(ROOT / "configs" / "lisa" / "lisa_tiny_synthref.py"),
           "--work-dir", str(tmp_path / "work"), "--cfg-options", f"data_root={synth_root}", *options]
    # RESEG_ROOT: a clone where `make demo` has not run (no tiny parts); the data is the session's
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RESEG_ROOT=str(tmp_path))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    out = [ln for ln in (done.stdout + done.stderr).splitlines() if "real_accelerator.py" not in ln]  # DeepSpeed's
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert message in out[-1] and len(out) <= 8, "\n".join(out[-20:])
    assert not any("System environment" in ln or "Hooks will be executed" in ln for ln in out)
