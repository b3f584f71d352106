"""splice-rag: retrieval for retrieval-augmented generation and fine-tuning.

- retrievers by tag (kind ``retriever``): ``bm25`` (bm25s), ``dense`` (a splice encoder trained
  contrastively with in-batch negatives, searched through a faiss index) and ``hybrid``
  (score fusion of several); each ``index``-es passages, ``search``-es queries, and saves to /
  loads from a folder (JSON, ``.npy``, safetensors and faiss's own format: no pickles);
- ``splice_rag.chunking``: documents into overlapping word windows;
- ``splice_rag.metrics``: recall@k and MRR;
- ``splice_rag.task``: the ``rag`` task, whose prompts carry the top-k retrieved passages (with
  distractors), so SFT, DPO or GRPO train on it like on any task.
"""

__version__ = "0.1.0"
