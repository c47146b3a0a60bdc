"""The CoIN domain, defined once: task registry, instruction lines, data-root layout, records, safe images.

    tasks.py         the eight CoIN tasks in training order + YAML-declared tasks (TaskSpec)
    instructions.py  every instruction sentence (CoIN's and ASD's)
    layout.py        paths inside a data root: annotations, ASD outputs, official ground truth
    records.py       train / test records, one loader each, errors naming file, index, id and field

ASD (`asd_gen`), training and evaluation (`sefe_train`) and the bundled data generator all read these; none
of them redefines a task list, an instruction line or a data-root path.
"""
