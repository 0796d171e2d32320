/* Runs the generated model on a Cortex-M4 (qemu-system-arm -M mps2-an386)
   over images read from the host by semihosting:

       images.u8     N images of QNN_INPUT_SIZE bytes (read)
       records.bin   per image, the QNN_CLASSES float32 logits then the
                     returned class as an int32, little-endian (written)

   both in QEMU's working directory. The start-up code is here: the vector
   table, the FPU enabled, .data copied and .bss cleared (the addresses come
   from cortex_m4.ld). The program ends with semihosting's SYS_EXIT:
   QEMU's exit status is 0 after every image, 1 on an error or a fault. */
#include <stdint.h>
#include <string.h>

#include "qnn_model.h"

#define SYS_OPEN 0x01
#define SYS_CLOSE 0x02
#define SYS_WRITE 0x05
#define SYS_READ 0x06
#define SYS_EXIT 0x18
#define MODE_READ_BINARY 1
#define MODE_WRITE_BINARY 5
#define EXIT_DONE 0x20026   /* ADP_Stopped_ApplicationExit */
#define EXIT_FAILED 0x20023 /* ADP_Stopped_RunTimeErrorUnknown */

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, __stack_top;

static int32_t semihosting(int32_t operation, const void *arguments)
{
    register int32_t r0 __asm__("r0") = operation;
    register const void *r1 __asm__("r1") = arguments;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static void stop(uint32_t reason)
{
    for (;;)
        semihosting(SYS_EXIT, (const void *)reason);
}

static int32_t open_file(const char *name, int32_t mode)
{
    uint32_t arguments[3];
    arguments[0] = (uint32_t)name;
    arguments[1] = (uint32_t)mode;
    arguments[2] = (uint32_t)strlen(name);
    return semihosting(SYS_OPEN, arguments);
}

/* bytes not transferred: 0 when all were */
static int32_t transfer(int32_t operation, int32_t handle, void *data,
                        uint32_t bytes)
{
    uint32_t arguments[3];
    arguments[0] = (uint32_t)handle;
    arguments[1] = (uint32_t)data;
    arguments[2] = bytes;
    return semihosting(operation, arguments);
}

/* the scratch memory passed in: counted in .bss by arm-none-eabi-size */
static uint64_t scratch[QNN_SCRATCH_WORDS];
static uint8_t pixels[QNN_INPUT_SIZE];
static union {
    struct {
        float logits[QNN_CLASSES];
        int32_t label;
    } fields;
    uint8_t bytes[4 * (QNN_CLASSES + 1)];
} record;

int main(void)
{
    int32_t in = open_file("images.u8", MODE_READ_BINARY);
    int32_t out = open_file("records.bin", MODE_WRITE_BINARY);
    if (in < 0 || out < 0)
        return 1;
    while (transfer(SYS_READ, in, pixels, QNN_INPUT_SIZE) == 0) {
        record.fields.label = qnn_predict_scratch(pixels, record.fields.logits,
                                                  scratch);
        if (transfer(SYS_WRITE, out, record.bytes, sizeof record.bytes) != 0)
            return 1;
    }
    semihosting(SYS_CLOSE, &out);
    return 0;
}

void reset_handler(void)
{
    uint32_t *from = &_sidata, *to = &_sdata;
    /* CPACR: full access to the FPU (coprocessors 10 and 11) */
    *(volatile uint32_t *)0xE000ED88 |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    while (to < &_edata)
        *to++ = *from++;
    for (to = &_sbss; to < &_ebss; ++to)
        *to = 0;
    stop(main() == 0 ? EXIT_DONE : EXIT_FAILED);
}

static void fault_handler(void)
{
    stop(EXIT_FAILED);
}

/* the initial stack pointer, then the handlers: reset, NMI, hard fault,
   memory management, bus and usage faults */
__attribute__((section(".vectors"), used))
static const uintptr_t vectors[7] = {
    (uintptr_t)&__stack_top, (uintptr_t)reset_handler,
    (uintptr_t)fault_handler, (uintptr_t)fault_handler,
    (uintptr_t)fault_handler, (uintptr_t)fault_handler,
    (uintptr_t)fault_handler};
