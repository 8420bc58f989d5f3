// KinemaPipeline: image-to-video exactly as diffusers' I2VGenXLPipeline — Pillow-exact image
// preprocessing, torch-compatible random streams, the denoising loop, video writing.
