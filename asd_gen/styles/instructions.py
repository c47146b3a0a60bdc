"""The instruction lines ("response format prompts") that end every converted question.

Exact lines used by SEFE are not published; these are this project's choices. MCQ and short answer reuse the
LLaVA-1.5 lines so CoIN's evaluation prompts match; the others are our own wording. Changing any of them
changes the training data: they are recorded in the ASD manifest.
"""

from __future__ import annotations

from typing import Literal

Style = Literal["yn", "mcq", "short", "brief", "detail"]
STYLES: tuple[Style, ...] = ("yn", "mcq", "short", "brief", "detail")

INSTRUCTIONS: dict[Style, str] = {
    "yn": "Is the candidate answer correct? Answer with Yes or No.",
    "mcq": "Answer with the option's letter from the given choices directly.",
    "short": "Answer the question using a single word or phrase.",
    "brief": "Answer the question, then explain your answer in one short sentence.",
    "detail": "Answer the question, then explain your reasoning in detail.",
}

# Grounding: the explanation styles become region descriptions (the box still comes first in the answer).
GROUNDING_INSTRUCTIONS: dict[Style, str] = {
    **INSTRUCTIONS,
    "brief": "Give the bounding box of the region, then describe the region in one short sentence.",
    "detail": "Give the bounding box of the region, then describe the region in detail.",
}

# The line in a yes/no question that shows the answer to be judged.
CANDIDATE_PREFIX = "Candidate answer: "
YES, NO = "Yes", "No"

# Instruction lines seen in LLaVA-1.5 / CoIN data, recognised (and replaced) even without the heuristic.
KNOWN_INSTRUCTIONS: tuple[str, ...] = (
    *INSTRUCTIONS.values(),
    *GROUNDING_INSTRUCTIONS.values(),
    "Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly.",
    "When the provided information is insufficient, respond with 'Unanswerable'.",
    "Answer the question using a single word, phrase or number.",
)
