#!/bin/bash
# Copies the trainer's newest checkpoint into $OUT: the UNet weights alone (< 16 MiB), the rest as one
# tar, and the training log.
W=/tmp/w; rm -rf $W/pack; mkdir -p $W/pack
cp -r $W/kinema-tiny $W/pack/ 2>/dev/null || { echo "no checkpoint yet"; cp $W/train.out $OUT/ 2>/dev/null; exit 0; }
mv $W/pack/kinema-tiny/unet/diffusion_pytorch_model.safetensors $OUT/unet.safetensors
tar -C $W/pack -cf $OUT/ckpt.tar kinema-tiny
cp $W/kinema-tiny.scratch/train_log.txt $OUT/ 2>/dev/null
ls -la $OUT
