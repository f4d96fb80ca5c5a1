"""Names of the tensors that the models return, shared by the model, the export and users.

They are the endpoint names of the original SimCLR SavedModels (docs/method.md), so code
written for those exports keeps working.
"""

INITIAL_CONV = "initial_conv"
INITIAL_MAX_POOL = "initial_max_pool"
BLOCK_GROUPS = ("block_group1", "block_group2", "block_group3", "block_group4")
FINAL_AVG_POOL = "final_avg_pool"
PROJ_HEAD_INPUT = "proj_head_input"
PROJ_HEAD_OUTPUT = "proj_head_output"
LOGITS_SUP = "logits_sup"

# The encoder's endpoints, from the stem to the pooled features, in network order.
ENCODER_ENDPOINTS = (INITIAL_CONV, INITIAL_MAX_POOL, *BLOCK_GROUPS, FINAL_AVG_POOL)
