// SPDX-License-Identifier: GPL-2.0-only
/* hello_repogen eBPF probe: counts sys_enter events in a one-slot array map. */
#include <linux/kconfig.h>
#include <linux/version.h>
#include <linux/types.h>
#include <uapi/linux/bpf.h>

#define SEC(name) __attribute__((section(name), used))

struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

static void *(*bpf_map_lookup_elem)(void *map, const void *key) =
	(void *)BPF_FUNC_map_lookup_elem;

struct bpf_map_def SEC("maps") hello_events = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(u32),
	.value_size = sizeof(u64),
	.max_entries = 1,
};

SEC("raw_tracepoint/sys_enter")
int hello_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	u32 key = 0;
	u64 *val = bpf_map_lookup_elem(&hello_events, &key);

	if (val)
		__sync_fetch_and_add(val, 1);
	return 0;
}

unsigned int hello_kernel_version SEC("kernel_version") = LINUX_VERSION_CODE;
char __license[] SEC("license") = "GPL";
