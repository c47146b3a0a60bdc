"""The CoIN domain, defined once: task registry, instruction lines, data-root layout, records, safe images.

    tasks.py         the eight CoIN tasks in training order + YAML-declared tasks (TaskSpec: answers, ASD
                     candidates, the CoIN scorer, the answer style the format checks expect)
    root_tasks.py    the tasks a data root declares in its tasks.json, looked up with the root
    instructions.py  every instruction sentence (CoIN's and ASD's)
    layout.py        paths inside a data root: annotations, ASD outputs, official ground truth
    records.py       train / test records, one loader each, errors naming file, index, id and field
    images.py        the one opener of record images (untrusted paths and pixels)

ASD (`asd_gen`), the model stack, evaluation, training and the data generators all read these; none of them
redefines a task list, a task's scorer or style, an instruction line or a data-root path, and none registers
anything here for a task to work (`tests/core/test_coin_domain.py`).
"""
