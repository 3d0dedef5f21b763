// SPDX-License-Identifier: GPL-2.0-only
/*
 * falco-libs-mini eBPF probe: counts syscalls per CPU from the
 * raw_syscalls:sys_enter raw tracepoint. Built against the target kernel's
 * headers (see Makefile), in the same style as falco's legacy probe.
 */
#include <linux/kconfig.h>
#include <linux/version.h>
#include <generated/utsrelease.h>
#include <linux/types.h>
#include <linux/sched.h>
#include <uapi/linux/bpf.h>

#include "driver_config.h"

#define SEC(name) __attribute__((section(name), used))

/* legacy "maps" section layout, as understood by libscap's loader */
struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
	unsigned int inner_map_idx;
	unsigned int numa_node;
};

static void *(*bpf_map_lookup_elem)(void *map, const void *key) =
	(void *)BPF_FUNC_map_lookup_elem;
static unsigned long long (*bpf_get_current_pid_tgid)(void) =
	(void *)BPF_FUNC_get_current_pid_tgid;

struct bpf_map_def SEC("maps") syscall_counts = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(u32),
	.value_size = sizeof(u64),
	.max_entries = 512,
};

SEC("raw_tracepoint/sys_enter")
int bpf_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	u32 id = (u32)ctx->args[1];
	u64 *count;

	if (bpf_get_current_pid_tgid() >> 32 == 0)
		return 0;
	count = bpf_map_lookup_elem(&syscall_counts, &id);
	if (count)
		__sync_fetch_and_add(count, 1);
	return 0;
}

unsigned int kernel_version_code SEC("kernel_version") = LINUX_VERSION_CODE;
char kernel_release_str[] SEC("kernel_release") = UTS_RELEASE;
char probe_ver[] SEC("probe_version") = DRIVER_VERSION;
char probe_name_str[] SEC("probe_name") = PROBE_NAME;
char __license[] SEC("license") = "GPL";
