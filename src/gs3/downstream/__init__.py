"""Downstream evaluation of pre-trained encoders: semantic segmentation of points and images.

- `gs3.downstream.data`: labelled-data readers, class sets, transforms, datasets (ScanNet scans, Pointcept
  folders, labelled frames, synthetic rooms) and the data part of the fine-tuning config.
- `segmentor`: encoder → per-point / per-pixel features → classifier head (`heads`).
- `pretrained`: pre-trained encoder weights from gs3 checkpoints and `gs3 export` files.
- `metrics`: confusion matrix → mIoU, mAcc, allAcc, per-class IoU.
- `config`: FinetuneConfig (what `gs3 finetune` reads).

Training and evaluation runs are in gs3.train.finetune (`gs3 finetune`, `gs3 evaluate`).
"""
