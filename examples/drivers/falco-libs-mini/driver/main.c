// SPDX-License-Identifier: GPL-2.0-only
/*
 * falco-libs-mini kernel module: a misc character device named
 * DRIVER_DEVICE_NAME that reports the driver version on read.
 */
#include <linux/init.h>
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/uaccess.h>

#include "driver_config.h"

static bool verbose;
module_param(verbose, bool, 0444);
MODULE_PARM_DESC(verbose, "Log open/read calls");

static const char banner[] = DRIVER_NAME " " DRIVER_VERSION "\n";

static ssize_t mini_read(struct file *f, char __user *buf, size_t len, loff_t *off)
{
	if (verbose)
		pr_info(DRIVER_NAME ": read %zu bytes at %lld\n", len, *off);
	return simple_read_from_buffer(buf, len, off, banner, sizeof(banner) - 1);
}

static const struct file_operations mini_fops = {
	.owner = THIS_MODULE,
	.read = mini_read,
	.llseek = default_llseek,
};

static struct miscdevice mini_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = DRIVER_DEVICE_NAME,
	.fops = &mini_fops,
	.mode = 0444,
};

static int __init mini_init(void)
{
	int ret = misc_register(&mini_dev);

	if (ret)
		return ret;
	pr_info(DRIVER_NAME ": version %s (api %d.%d.%d) loaded, /dev/%s\n",
		DRIVER_VERSION, PPM_API_CURRENT_VERSION_MAJOR,
		PPM_API_CURRENT_VERSION_MINOR, PPM_API_CURRENT_VERSION_PATCH,
		DRIVER_DEVICE_NAME);
	return 0;
}

static void __exit mini_exit(void)
{
	misc_deregister(&mini_dev);
	pr_info(DRIVER_NAME ": unloaded\n");
}

module_init(mini_init);
module_exit(mini_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("repogen examples");
MODULE_DESCRIPTION("falco-libs-mini test driver");
MODULE_VERSION(DRIVER_VERSION);
