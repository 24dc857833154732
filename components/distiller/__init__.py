"""Distiller: knowledge distillation from a teacher model into a smaller student.

``component.Distiller`` (TFX component), ``config.DistillerConfig`` (its typed config),
``distiller.run`` (the core, no TFX), ``student`` (how the student is built) and
``student_trainer`` (the loss and the ``DistillationModel`` that trains the student).
"""
