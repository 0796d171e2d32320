/* The generated model as a WebAssembly module for run_wasm.js: buffers
   for one image and its logits, and `predict`, which fills the logits and
   returns the class. Built with -nostdlib: the memset and memcpy that the
   compiler may call come from here. */
#include <stddef.h>
#include <stdint.h>

#include "qnn_model.h"

static uint64_t scratch[QNN_SCRATCH_WORDS];
static uint8_t pixels[QNN_INPUT_SIZE];
static float logits[QNN_CLASSES];

__attribute__((export_name("input_size"))) int input_size(void)
{
    return QNN_INPUT_SIZE;
}

__attribute__((export_name("classes"))) int classes(void)
{
    return QNN_CLASSES;
}

__attribute__((export_name("pixels"))) uint8_t *pixels_buffer(void)
{
    return pixels;
}

__attribute__((export_name("logits"))) float *logits_buffer(void)
{
    return logits;
}

__attribute__((export_name("predict"))) int predict(void)
{
    return qnn_predict_scratch(pixels, logits, scratch);
}

void *memset(void *destination, int value, size_t bytes)
{
    unsigned char *p = destination;
    while (bytes--)
        *p++ = (unsigned char)value;
    return destination;
}

void *memcpy(void *destination, const void *source, size_t bytes)
{
    unsigned char *p = destination;
    const unsigned char *q = source;
    while (bytes--)
        *p++ = *q++;
    return destination;
}
