// OpenBLAS's CBLAS interface plus its runtime queries (openblas_get_config, thread counts),
// which `kinema selftest` uses to prove that OpenBLAS, not a reference BLAS, is linked.
#include <cblas.h>
