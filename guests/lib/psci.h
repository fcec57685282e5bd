/*
 * PSCI (ARM DEN 0022) over HVC #0: the 32-bit function IDs and return codes beyond the ones
 * rt.h already has (PSCI_VERSION, PSCI_SYSTEM_OFF, PSCI_SYSTEM_RESET).  Header only.
 */
#ifndef GUEST_PSCI_H
#define GUEST_PSCI_H

#include "rt.h"

#define PSCI_CPU_OFF            0x84000002u
#define PSCI_CPU_ON             0x84000003u     /* target MPIDR, entry PA, context id (-> r0) */
#define PSCI_AFFINITY_INFO      0x84000004u     /* target MPIDR, lowest affinity level */
#define PSCI_MIGRATE_INFO_TYPE  0x84000006u
#define PSCI_FEATURES           0x8400000au     /* PSCI 1.0: function ID -> 0 or NOT_SUPPORTED */
#define PSCI_SYSTEM_SUSPEND     0x8400000eu

#define PSCI_RET_SUCCESS            0
#define PSCI_RET_NOT_SUPPORTED      (-1)
#define PSCI_RET_INVALID_PARAMETERS (-2)
#define PSCI_RET_DENIED             (-3)
#define PSCI_RET_ALREADY_ON         (-4)
#define PSCI_RET_ON_PENDING         (-5)

/* AFFINITY_INFO results */
#define PSCI_AFF_ON             0
#define PSCI_AFF_OFF            1
#define PSCI_AFF_ON_PENDING     2

static inline int32_t psci_call(uint32_t fid, uint32_t a1, uint32_t a2, uint32_t a3)
{
    return (int32_t)(uint32_t)hvc_call(fid, a1, a2, a3);
}

#endif
