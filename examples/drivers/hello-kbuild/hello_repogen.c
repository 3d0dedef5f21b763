// SPDX-License-Identifier: GPL-2.0-only
/* hello_repogen: minimal kernel module used by repogen's kbuild recipe tests. */
#include <linux/init.h>
#include <linux/module.h>
#include <linux/kernel.h>
#include <generated/utsrelease.h>

static char *greeting = "hello";
module_param(greeting, charp, 0444);
MODULE_PARM_DESC(greeting, "Word printed on load and unload");

static int __init hello_repogen_init(void)
{
	pr_info("hello_repogen: %s from a module built for %s\n", greeting, UTS_RELEASE);
	return 0;
}

static void __exit hello_repogen_exit(void)
{
	pr_info("hello_repogen: %s again, unloading\n", greeting);
}

module_init(hello_repogen_init);
module_exit(hello_repogen_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("repogen examples");
MODULE_DESCRIPTION("hello world module for repogen's kbuild recipe");
MODULE_VERSION("0.1.0");
