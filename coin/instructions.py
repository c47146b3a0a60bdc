"""The instruction lines ("response format prompts") of CoIN questions, and those ASD writes.

Every sentence lives here once. CoIN's own lines (short answer, option letter, VizWiz's unanswerable hint, the
Grounding question prefix) are the LLaVA-1.5 / CoIN wording; the ASD lines of the other styles are not
published by SEFE and are this project's choices. MCQ and short answer reuse the CoIN lines so evaluation
prompts match. Changing any of them changes the training data: they are recorded in the ASD manifest.
"""

from __future__ import annotations

from typing import Literal

Style = Literal["yn", "mcq", "short", "brief", "detail"]
STYLES: tuple[Style, ...] = ("yn", "mcq", "short", "brief", "detail")

# CoIN's lines, as the data carries them.
SHORT_ANSWER = "Answer the question using a single word or phrase."
# ScienceQA's line; its evaluation appends it to the question
MCQ_LETTER = "Answer with the option's letter from the given choices directly."
VIZWIZ_UNANSWERABLE = "When the provided information is insufficient, respond with 'Unanswerable'."
SHORT_ANSWER_NUMBER = "Answer the question using a single word, phrase or number."
GROUNDING_PROMPT = "Please provide the bounding box coordinate of the region this sentence describes:"
YES_NO_ANSWER = "Answer with Yes or No."  # ends ASD's yes/no line; Micro-CoIN's yes/no questions end with it

# Markers: the part of each line above by which evaluation (`sefe.evaluation.format_checks`) recognises the
# answer style a question's last line asks for, matched case-insensitively; the tests keep each one part of
# its sentence.
SHORT_ANSWER_MARKER = "single word"  # SHORT_ANSWER, SHORT_ANSWER_NUMBER
MCQ_MARKER = "option's letter"  # MCQ_LETTER
GROUNDING_MARKER = "bounding box"  # GROUNDING_PROMPT (the Grounding explanation lines name it too)
YES_NO_MARKER = "with yes or no"  # YES_NO_ANSWER

INSTRUCTIONS: dict[Style, str] = {
    "yn": f"Is the candidate answer correct? {YES_NO_ANSWER}",
    "mcq": MCQ_LETTER,
    "short": SHORT_ANSWER,
    "brief": "Answer the question, then explain your answer in one short sentence.",
    "detail": "Answer the question, then explain your reasoning in detail.",
}

# Grounding: the explanation styles become region descriptions (the box still comes first in the answer).
GROUNDING_INSTRUCTIONS: dict[Style, str] = {
    **INSTRUCTIONS,
    "brief": "Give the bounding box of the region, then describe the region in one short sentence.",
    "detail": "Give the bounding box of the region, then describe the region in detail.",
}
# The explanation styles' markers (brief and detail, in both tables above).
EXPLAINED_MARKERS: tuple[str, ...] = ("then explain", "then describe", "explain your")

# Lines of a question that give context rather than ask (ScienceQA's context, TextVQA's OCR tokens).
DEFAULT_CONTEXT_PREFIXES: tuple[str, ...] = ("Context:", "Reference OCR token:", "Hint:")

# The line in a yes/no question that shows the answer to be judged.
CANDIDATE_PREFIX = "Candidate answer: "
YES, NO = "Yes", "No"

# Instruction lines seen in LLaVA-1.5 / CoIN data, recognised (and replaced) even without the heuristic.
KNOWN_INSTRUCTIONS: tuple[str, ...] = (
    *INSTRUCTIONS.values(),
    *GROUNDING_INSTRUCTIONS.values(),
    VIZWIZ_UNANSWERABLE,
    SHORT_ANSWER_NUMBER,
)
