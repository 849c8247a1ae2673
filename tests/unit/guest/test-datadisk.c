/* SPDX-License-Identifier: Apache-2.0 */
/* Listing the data disks over a sysfs-shaped tree: the OS disk (or the disk holding its
 * partition) and the temp disk are left out, and a serial becomes the /dev/mapper name only
 * when it is a safe one no other disk took (else dataN). */
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

static void rm_rf(const char *root)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
}

static void test_names(void **state)
{
	(void)state;
	assert_true(cvm_guest_data_disk_name_valid("data1"));
	assert_true(cvm_guest_data_disk_name_valid("Logs_2026-x"));
	static const char sixty_four[] =
		"0123456789012345678901234567890123456789012345678901234567890123";
	assert_true(cvm_guest_data_disk_name_valid(sixty_four));
	static const char *const bad[] = { "", "root", "temp", "control", "a b", "../x", "a/b",
					   "x\n", ("0123456789012345678901234567890123456789012345"
						   "678901234567890123X") };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (cvm_guest_data_disk_name_valid(bad[i]))
			fail_msg("'%s' accepted", bad[i]);
	assert_false(cvm_guest_data_disk_name_valid(NULL));
}

static void test_find(void **state)
{
	(void)state;
	char root[] = "/tmp/cvm-sysblock-XXXXXX";
	assert_non_null(mkdtemp(root));
	struct cvm_guest_data_disk d[8];
	size_t n = 99;
	struct cvm_err err = { 0 };
	put(root, "vda", "os");
	put(root, "loop0", "data9");  /* not virtio: ignored */
	assert_int_equal(cvm_guest_find_data_disks(root, "/dev/vda", d, 8, &n, &err), 0);
	assert_int_equal(n, 0);
	put(root, "vdb", "data1");
	put(root, "vdc", "temp");     /* the temp disk: never a data disk */
	put(root, "vdd", "../etc");   /* unsafe serial -> dataN */
	put(root, "vde", "data1");    /* taken -> dataN */
	put(root, "vdf", NULL);       /* no serial -> dataN */
	put(root, "vdg", "root");     /* the OS disk's mapper name -> dataN */
	put(root, "vdaa", "logs");    /* after vdz */
	put(root, "vdh", "data2");    /* its own serial, so the fallbacks skip data2 */
	assert_int_equal(cvm_guest_find_data_disks(root, "/dev/vda", d, 8, &n, &err), 0);
	assert_int_equal(n, 7);
	static const char *const dev[] = { "vdb", "vdd", "vde", "vdf", "vdg", "vdh", "vdaa" };
	static const char *const name[] = { "data1", "data3", "data4", "data5", "data6", "data2",
					    "logs" };
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(d[i].dev, dev[i]);
		assert_string_equal(d[i].name, name[i]);
	}
	assert_string_equal(d[1].serial, "../etc");
	assert_string_equal(d[3].serial, "");
	/* a partition of vdb as the OS disk: vdb is left out, vda is listed */
	assert_int_equal(cvm_guest_find_data_disks(root, "/dev/vdb2", d, 8, &n, &err), 0);
	assert_int_equal(n, 7);
	assert_string_equal(d[0].dev, "vda");
	assert_string_equal(d[0].name, "os");
	assert_string_equal(d[1].dev, "vdd");
	assert_string_equal(d[2].name, "data1"); /* vdb left out: vde has its serial again */
	/* more than cap */
	assert_int_equal(cvm_guest_find_data_disks(root, "/dev/vda", d, 3, &n, &err), -E2BIG);
	assert_non_null(strstr(err.msg, "more than 3"));
	rm_rf(root);
	assert_int_equal(cvm_guest_find_data_disks("/nonexistent-sys-block", "/dev/vda", d, 8, &n,
						   &err), -ENOENT);
	assert_non_null(strstr(err.msg, "/nonexistent-sys-block"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_find),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
