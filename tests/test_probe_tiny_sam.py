"""tools/research/probe_tiny_sam.py: the oracle-prompt probe of the tiny SAM runs with each decoder and
sorts the synthetic expressions into their kinds."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tiny import tiny_lmm_cfg


def probe_config(tmp_path: Path) -> Path:
    """A config file with the test suite's tiny LLaVA and an even smaller SAM."""
    lmm = tiny_lmm_cfg(str(tmp_path / "tokenizer"), lora=None)
    sam = dict(type="SAMMaskSource", variant="custom", image_size=64, prompt_dim=16,
               encoder=dict(embed_dim=16, depth=1, num_heads=2), decoder_mlp_dim=32, decoder_heads=2,
               iou_head_hidden_dim=16)
    cfg = tmp_path / "probe_cfg.py"
    cfg.write_text(f"model = dict(lmm={lmm!r}, mask_source={sam!r}, head=dict(type='LISAHead'))\n")
    return cfg


@pytest.mark.parametrize("decoder,encoder", [("sam", []), ("dot", ["--train-encoder"])])
def test_probe_reports_giou_by_kind(synth_root, tmp_path, capsys, decoder, encoder):
    from reseg.research import probe_tiny_sam

    cfg = probe_config(tmp_path)
    assert probe_tiny_sam.main(["--config", str(cfg), "--data", str(synth_root), "--steps", "2", "--batch", "2",
                                "--val-images", "3", "--decoder", decoder, *encoder]) == 0
    out = capsys.readouterr().out
    m = re.search(r"gIoU ([0-9.]+) on (\d+) validation expressions after 2 steps", out)
    assert m and 0.0 <= float(m.group(1)) <= 1.0 and int(m.group(2)) > 0
    assert f"decoder {decoder}" in out and ("trained" in out) == bool(encoder)


@pytest.mark.parametrize("query", [["--query", "encoder", "--causal"], ["--query", "llm"],
                                   ["--query", "llm", "--wrap", "lisa", "--read", "shift"]])
def test_probe_query_encoders_train_and_report_a_curve(synth_root, tmp_path, capsys, query):
    from reseg.research import probe_tiny_sam

    cfg = probe_config(tmp_path)
    assert probe_tiny_sam.main(["--config", str(cfg), "--data", str(synth_root), "--steps", "3", "--batch", "2",
                                "--val-images", "2", "--val-every", "2", *query]) == 0
    out = capsys.readouterr().out
    assert re.search(r"val after 2 steps: gIoU [0-9.]+ \(\d+\)", out)
    label = "encoder causal" if "encoder" in query else "llm" if len(query) == 2 else r"llm wrap=lisa read=shift"
    m = re.search(rf"oracle prompt \({label}\), decoder sam, encoder frozen: gIoU ([0-9.]+) on (\d+) ", out)
    assert m and 0.0 <= float(m.group(1)) <= 1.0 and int(m.group(2)) > 0


def test_expression_encoder_reads_the_query_token_and_ignores_padding():
    """An expression's code does not depend on what else is in the batch (padding is masked),
    and every word reaches it (the query token comes last, so a causal mask still sees them all)."""
    import torch

    from reseg.research.probe_tiny_sam import ExpressionEncoder

    torch.manual_seed(0)
    enc = ExpressionEncoder(vocab=20, width=16, heads=2, layers=2, causal=True).eval()
    a, b = torch.tensor([3, 4, 5]), torch.tensor([7, 8, 9, 10, 11, 12])
    with torch.no_grad():
        alone = enc([a])
        batched = enc([a, b])
        other = enc([torch.tensor([3, 4, 6])])
    torch.testing.assert_close(batched[0], alone[0], rtol=1e-5, atol=1e-5)
    assert (other[0] - alone[0]).abs().max() > 1e-3  # the last word reaches the code


def test_expression_kinds_follow_the_synthetic_phrasings():
    from reseg.research.probe_tiny_sam import expression_kind

    assert expression_kind("the star left of the red circle") == "relation"
    assert expression_kind("the circle above the star") == "relation"
    assert expression_kind("the shape furthest to the left") == "position"
    assert expression_kind("the bottommost square") == "position"
    assert expression_kind("the biggest yellow shape") == "size"
    assert expression_kind("blue circle") == "attribute"


def test_cfg_options_reach_the_mask_source(synth_root, tmp_path):
    from reseg.research import probe_tiny_sam

    cfg = probe_config(tmp_path)
    missing = tmp_path / "nowhere" / "sam_tiny.pth"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        probe_tiny_sam.main(["--config", str(cfg), "--data", str(synth_root), "--steps", "1",
                             "--cfg-options", f"model.mask_source.checkpoint={missing}"])


def test_tiny_llm_text_code_does_not_depend_on_batch_padding(tmp_path):
    """The text-only LLaMA reads ``[SEG]`` of each expression; a longer neighbour in the batch (padding)
    changes nothing, in train and in eval mode."""
    import torch

    from reseg.research.probe_tiny_sam import TinyLLMText

    torch.manual_seed(0)
    enc = TinyLLMText(tiny_lmm_cfg(str(tmp_path / "tokenizer"), lora=None))
    a, b = torch.tensor([5, 6, 7]), torch.tensor([8, 9, 10, 11, 12, 13, 14])
    for mode in (enc.train, enc.eval):
        mode()
        with torch.no_grad():
            alone, batched = enc([a]), enc([a, b])
        assert torch.isfinite(batched).all()
        torch.testing.assert_close(batched[0], alone[0], rtol=1e-4, atol=1e-4)


def test_llm_query_code_wraps_the_expression_in_lisas_conversation_and_reads_before_seg(tmp_path):
    """``--wrap lisa --read shift``: the code is the state of the token before ``[SEG]`` in
    ``<s>USER: What is {text} in this image? ... ASSISTANT: [SEG].``, whatever the batch's padding."""
    import torch
    from mmengine.config import Config

    from reseg.research.probe_tiny_sam import TinyLLMText

    cfg = Config.fromfile(str(probe_config(tmp_path)))
    torch.manual_seed(0)
    q = TinyLLMText(cfg.model.lmm.to_dict(), wrap="lisa", read="shift").eval()
    text = q.text_of("the red circle")
    assert text.startswith("USER:") and "What is the red circle in this image?" in text
    assert text.endswith("ASSISTANT: [SEG].")
    full = torch.tensor(q.tokenizer(text).input_ids)
    seg_at = int((full == q.seg_id).nonzero()[0])
    with torch.no_grad():
        hidden = q.lm(input_ids=full[None], attention_mask=torch.ones_like(full)[None]).last_hidden_state[0]
        code = q(["the red circle", "the big blue star left of the square"])
    torch.testing.assert_close(code[0], hidden[seg_at - 1], rtol=1e-4, atol=1e-4)  # the token before [SEG]
    q.wrap, q.read = "none", "at"
    assert q.text_of("the red circle") == "the red circle[SEG]"
