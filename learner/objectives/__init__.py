"""The learner's objectives, one file each (sft, ppo, grpo), their registry, and the training items they read."""
