"""The model stack: how a record becomes ids and labels, how a model is assembled, saved and loaded.

Today's family is LLaVA-1.5 (`llava.py`, the vicuna_v1 `conversation.py`, SentencePiece `tokenization.py`).
Nothing here knows about continual training or scoring: it imports only `sefe.coin` and the ground floor.
"""
