// KinemaModels: the I2VGen-XL components (CLIP tokenizer and encoders, AutoencoderKL,
// I2VGenXLUNet and its blocks, DDIMScheduler) and checkpoint loading, written against the
// `Backend` op front-end of KinemaCore so they run on every backend, meta included.
