/* A QEMU TCG plugin (qemu-user >= 7.2, plugin API 1) that counts the guest instructions a program executes, and
 * reports the count at marks the program sets.
 *
 * A mark is a sched_get_priority_max(2) call whose policy is MARK_MAGIC + id (0 <= id < 65536): the kernel (qemu
 * here) refuses the policy, so the call changes nothing in the guest, and this plugin writes
 * "mark <id> <instructions> <neon>" (totals so far) to the plugin log (qemu's -D file, or stderr). Python sets
 * one with os.sched_get_priority_max(MARK_MAGIC + id) (flow/a9/count.py). The count is the total over all guest threads, kept with an atomic add per executed
 * translation block, with the Advanced SIMD (NEON) ones among them counted apart (the Cortex-A9 issues them
 * at its own rate). At exit the plugin writes "total <insns> <neon>".
 *
 * Build: cc -shared -fPIC -O2 -I<dir of qemu-plugin.h> $(pkg-config --cflags glib-2.0) insn_count.c -o insn_count.so
 * (qemu-plugin.h is in QEMU's source, include/qemu/, e.g. from `apt-get source qemu`).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <glib.h>
#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MARK_MAGIC 0x4c500000u /* "LP" << 20: no real scheduling policy is near it */
#define NR_SCHED_GET_PRIORITY_MAX_ARM 159

static uint64_t insns, neon;

typedef struct { uint64_t n, simd; } Block;

/* Advanced SIMD (NEON), told from VFP by the disassembly (the A32/T32 mode of a block is not in the plugin API of
 * 7.2, and the two share encodings): a "v" mnemonic that is not a VFP load/store/transfer, not double precision and
 * not on single-precision s registers, or any element/structure load/store (vld1-4, vst1-4). */
static int is_neon(const char *dis)
{
    static const char *vfp[] = {"vldr", "vstr", "vldm", "vstm", "vpush", "vpop", "vmrs", "vmsr", NULL};
    if (dis[0] != 'v')
        return 0;
    if (!strncmp(dis, "vld", 3) || !strncmp(dis, "vst", 3)) {
        char d = dis[3];
        if (d >= '1' && d <= '4')
            return 1;
    }
    for (int i = 0; vfp[i]; i++)
        if (!strncmp(dis, vfp[i], strlen(vfp[i])))
            return 0;
    if (strstr(dis, ".f64"))
        return 0;
    for (const char *c = strchr(dis, ' '); c && *c; c++) /* an s register operand: s0..s31 after a separator */
        if (c[0] == 's' && c[1] >= '0' && c[1] <= '9' && (c[-1] == ' ' || c[-1] == ',' || c[-1] == '{'))
            return 0;
    return 1;
}

static void tb_exec(unsigned int vcpu, void *udata)
{
    Block *blk = udata;
    __atomic_fetch_add(&insns, blk->n, __ATOMIC_RELAXED);
    if (blk->simd)
        __atomic_fetch_add(&neon, blk->simd, __ATOMIC_RELAXED);
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    Block *blk = g_new0(Block, 1); /* one per translation, kept for the run: TBs are retranslated rarely */
    blk->n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < blk->n; i++) {
        char *dis = qemu_plugin_insn_disas(qemu_plugin_tb_get_insn(tb, i));
        blk->simd += dis && is_neon(dis);
        g_free(dis);
    }
    qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, blk);
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    uint32_t policy = (uint32_t)a1;
    if (num != NR_SCHED_GET_PRIORITY_MAX_ARM || (policy & 0xffff0000u) != MARK_MAGIC)
        return;
    char line[96];
    snprintf(line, sizeof line, "mark %u %" PRIu64 " %" PRIu64 "\n", policy & 0xffffu,
             __atomic_load_n(&insns, __ATOMIC_RELAXED), __atomic_load_n(&neon, __ATOMIC_RELAXED));
    qemu_plugin_outs(line);
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
    char line[96];
    snprintf(line, sizeof line, "total %" PRIu64 " %" PRIu64 "\n", insns, neon);
    qemu_plugin_outs(line);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    if (strcmp(info->target_name, "arm") != 0) {
        fprintf(stderr, "insn_count: built for 32-bit arm guests, not %s\n", info->target_name);
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
