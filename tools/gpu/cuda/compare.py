import sys, numpy as np
ref = np.load(sys.argv[1])
for p in sys.argv[2:]:
    x = np.load(p)
    d = np.abs(x.astype(np.float64) - ref)
    print(f"{p} vs {sys.argv[1]}: shape {x.shape}, max abs diff {d.max():.3e}, mean abs diff {d.mean():.3e}, "
          f"max diff in 8-bit levels {np.abs(np.round(x*255) - np.round(ref*255)).max():.0f}")
