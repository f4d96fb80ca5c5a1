"""The original's flags and its README's commands, for the tests that check we accept them."""


ORIGINAL_FLAGS = (
    "learning_rate learning_rate_scaling warmup_epochs weight_decay batch_norm_decay "
    "train_batch_size train_split train_epochs train_steps eval_steps eval_batch_size "
    "checkpoint_epochs checkpoint_steps eval_split dataset cache_dataset mode train_mode "
    "lineareval_while_pretraining checkpoint zero_init_logits_layer fine_tune_after_block "
    "master model_dir data_dir use_tpu tpu_name tpu_zone gcp_project optimizer momentum "
    "eval_name keep_checkpoint_max keep_hub_module_max temperature hidden_norm proj_head_mode "
    "proj_out_dim num_proj_layers ft_proj_selector global_bn width_multiplier resnet_depth "
    "sk_ratio se_ratio image_size color_jitter_strength use_blur").split()
# The original README's commands, as printed there, with `python run.py` dropped.
README_CIFAR10 = """--train_mode=pretrain \\
  --train_batch_size=512 --train_epochs=1000 \\
  --learning_rate=1.0 --weight_decay=1e-4 --temperature=0.5 \\
  --dataset=cifar10 --image_size=32 --eval_split=test --resnet_depth=18 \\
  --use_blur=False --color_jitter_strength=0.5 \\
  --model_dir=/tmp/simclr_test --use_tpu=False"""
README_IMAGENET = """--train_mode=pretrain \\
  --train_batch_size=4096 --train_epochs=100 --temperature=0.1 \\
  --learning_rate=0.075 --learning_rate_scaling=sqrt --weight_decay=1e-4 \\
  --dataset=imagenet2012 --image_size=224 --eval_split=validation \\
  --data_dir=$DATA_DIR --model_dir=$MODEL_DIR \\
  --use_tpu=True --tpu_name=$TPU_NAME --train_summary_steps=0"""


def argv_of(command, **env):
    for name, value in env.items():
        command = command.replace(f"${name}", value)
    return command.replace("\\\n", " ").split()
