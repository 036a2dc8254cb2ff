"""The code of the research scripts in ``tools/research/``: pre-training the tiny models' parts and
probing what they learn. It is how the tiny scale was made to stand in for the real one, not part of
the platform's API: names here may change without notice.

* :mod:`.pretrain_tiny`: the tiny SAM, vision tower and LLaVA pre-trained on the synthetic benchmark
  (``make demo`` runs it for the demo's parts);
* :mod:`.probe_tiny_llm`, :mod:`.probe_tiny_sam`: can the tiny LLM read a question, can the tiny SAM
  follow a perfect query code;
* :mod:`.analyze_seg_states`: do a trained model's ``[SEG]`` states depend on the query;
* :mod:`.tiny`: what these scripts share.
"""
