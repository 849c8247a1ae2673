/* SPDX-License-Identifier: Apache-2.0 */
/* Finding and vetting the temp disk: the serial lookup over a sysfs-shaped tree, and the
 * refusals of anything that is not a blank block device other than the OS disk. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <opencvm/guest.h>

static void put(const char *root, const char *dev, const char *serial)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", root, dev);
	assert_int_equal(mkdir(p, 0700), 0);
	if (!serial)
		return;
	snprintf(p, sizeof(p), "%s/%s/serial", root, dev);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fprintf(f, "%s\n", serial);
	fclose(f);
}

static void test_find(void **state)
{
	(void)state;
	char root[] = "/tmp/cvm-sysblock-XXXXXX";
	assert_non_null(mkdtemp(root));
	char name[32] = "";
	struct cvm_err err = { 0 };
	put(root, "vda", "");           /* the OS disk: no serial */
	put(root, "loop0", "temp");     /* not virtio: ignored */
	put(root, "vdb", "data1");
	assert_int_equal(cvm_guest_find_temp_disk(root, name, sizeof(name), &err), -ENOENT);
	put(root, "vdc", "temp");
	assert_int_equal(cvm_guest_find_temp_disk(root, name, sizeof(name), &err), 0);
	assert_string_equal(name, "vdc");
	put(root, "vdd", "temp");        /* two claim it: refused, naming both */
	assert_int_equal(cvm_guest_find_temp_disk(root, name, sizeof(name), &err), -EEXIST);
	assert_non_null(strstr(err.msg, "two devices"));
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(cvm_guest_find_temp_disk("/nonexistent-sys-block", name, sizeof(name),
						  &err), -ENOENT);
	assert_non_null(strstr(err.msg, "/nonexistent-sys-block"));
}

static void test_check(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	char path[] = "/tmp/cvm-temp-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(cvm_guest_temp_disk_check(path, "/dev/vda", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "not a block device"));
	unlink(path);
	assert_int_equal(cvm_guest_temp_disk_check("/nonexistent", NULL, &err), -ENOENT);
	/* a block device that holds data is refused (the loop devices and disks of this host are
	 * never blank in their first MiB when they hold a partition table or filesystem) */
	struct stat st;
	if (stat("/dev/vda", &st) == 0 && S_ISBLK(st.st_mode)) {
		assert_int_equal(cvm_guest_temp_disk_check("/dev/vda", "/dev/vda", &err), -EPERM);
		assert_non_null(strstr(err.msg, "is the OS disk"));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_find),
		cmocka_unit_test(test_check),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
