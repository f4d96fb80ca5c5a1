"""How good a representation is: top-1 / top-5 of the supervised head (``supervised``),
the kNN monitor (``knn``), a run's evaluators run together (``running``: the parts of
``simclr_tf/evaluators``, found by name), and the transfer protocol (``transfer``: frozen
features of other datasets, L2-regularised logistic regression in ``logistic``).

Imports the wings below it: core, data, models, runs."""
