/* test_proc.c - option parsers and run directories shared by the process binaries. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "testutil.h"

#include "proc.h"

static void test_parse_numbers_and_ranges(void **state)
{
    (void)state;
    llorch_error err = {0};
    long n;
    assert_int_equal(proc_parse_long("--n", "42", 0, 100, &n, &err), 0);
    assert_int_equal(n, 42);
    assert_int_equal(proc_parse_long("--n", "101", 0, 100, &n, &err), -1);
    assert_non_null(strstr(err.msg, "--n"));
    assert_int_equal(proc_parse_long("--n", "4x", 0, 100, &n, &err), -1);
    float f;
    assert_int_equal(proc_parse_float("--t", "0.5", &f, &err), 0);
    assert_true(f == 0.5f);
    assert_int_equal(proc_parse_float("--t", "nan", &f, &err), -1);
    uint64_t bytes;
    assert_int_equal(proc_parse_bytes("512M", &bytes, &err), 0);
    assert_int_equal(bytes, 512ull << 20);
    uint32_t first, last;
    assert_int_equal(proc_parse_range("3:7", &first, &last, &err), 0);
    assert_int_equal(first, 3);
    assert_int_equal(last, 7);
    assert_int_equal(proc_parse_range("7:3", &first, &last, &err), -1);
}

/* A pid that is certainly gone: a child that exited and was reaped. */
static pid_t s_dead_pid(void)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(0);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    return pid;
}

/* Folders of dead processes go, with their files; a live process's folder, another
 * prefix and names that do not parse stay. */
static void test_sweep_removes_only_dead_processes_dirs(void **state)
{
    (void)state;
    char base[64] = "/tmp/llorch-test-sweep-XXXXXX";
    assert_non_null(mkdtemp(base));
    char dead[256], live[256], other[256], odd[256], file[300];
    snprintf(dead, sizeof dead, "%s/llorch-router-%ld-abc", base, (long)s_dead_pid());
    snprintf(live, sizeof live, "%s/llorch-router-%ld-abc", base, (long)getpid());
    snprintf(other, sizeof other, "%s/llorch-other-%ld-abc", base, (long)s_dead_pid());
    snprintf(odd, sizeof odd, "%s/llorch-router-12x-abc", base);
    const char *dirs[] = {dead, live, other, odd};
    for (int i = 0; i < 4; i++)
        assert_int_equal(mkdir(dirs[i], 0700), 0);
    snprintf(file, sizeof file, "%s/http", dead);
    FILE *fp = fopen(file, "w");
    assert_non_null(fp);
    fclose(fp);

    assert_int_equal(proc_run_dirs_sweep(base, "llorch-router"), 1);
    assert_int_equal(access(dead, F_OK), -1);
    assert_int_equal(access(live, F_OK), 0);
    assert_int_equal(access(other, F_OK), 0);
    assert_int_equal(access(odd, F_OK), 0);
    assert_int_equal(proc_run_dirs_sweep("/no/such/folder", "llorch-router"), 0);

    for (int i = 1; i < 4; i++)
        rmdir(dirs[i]);
    assert_int_equal(rmdir(base), 0);
}

/* The whole range, from any offset; a range past the end is EIO, not a short read. */
static void test_pread_all_reads_everything_or_fails(void **state)
{
    (void)state;
    const char *path = test_tmp_path(".bin");
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint8_t data[10000];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7);
    assert_int_equal(fwrite(data, 1, sizeof data, f), sizeof data);
    fclose(f);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    uint8_t got[sizeof data];
    assert_int_equal(proc_pread_all(fd, got, sizeof data, 0), 0);
    assert_memory_equal(got, data, sizeof data);
    assert_int_equal(proc_pread_all(fd, got, 100, 9000), 0);
    assert_memory_equal(got, data + 9000, 100);
    errno = 0;
    assert_int_equal(proc_pread_all(fd, got, 100, 9950), -1);
    assert_int_equal(errno, EIO);
    close(fd);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_numbers_and_ranges),
        cmocka_unit_test(test_sweep_removes_only_dead_processes_dirs),
        cmocka_unit_test(test_pread_all_reads_everything_or_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
