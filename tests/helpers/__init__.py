"""What several test modules share: tiny data sets, tiny configs, subprocess runs.

- `finetune`: a tiny CASME II-layout set, the fine-tuning config, fold steps, killed runs.
- `pretrain`: the pre-training config, a small synthetic DFEW set, subprocess and multi-process runs.
- `release_layouts`: tiny on-disk copies of the six releases' layouts, quirks included.
"""
