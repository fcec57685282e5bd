/* compute_quick: guests/compute.c with small sizes (~10^7 instructions), for bench --quick. */
#define ROUNDS          2u
#define ALU_ITERS       300000u
#define REGION_BYTES    (1u << 20)
#include "compute.c"
