/* Runs the generated model over a file of images (hosted targets: x86-64,
   AArch64 under qemu-user):

       run_images IMAGES RECORDS

   IMAGES holds N images of QNN_INPUT_SIZE bytes; RECORDS receives, for
   each, its QNN_CLASSES float32 logits then the returned class as an
   int32, in the machine's byte order. */
#include <stdio.h>
#include <stdint.h>

#include "qnn_model.h"

int main(int argc, char **argv)
{
    static uint8_t pixels[QNN_INPUT_SIZE];
    float logits[QNN_CLASSES];
    FILE *in, *out;
    long images = 0;
    if (argc != 3) {
        fprintf(stderr, "usage: run_images IMAGES RECORDS\n");
        return 2;
    }
    in = fopen(argv[1], "rb");
    out = fopen(argv[2], "wb");
    if (in == NULL || out == NULL) {
        perror("run_images");
        return 1;
    }
    while (fread(pixels, 1, QNN_INPUT_SIZE, in) == QNN_INPUT_SIZE) {
        int32_t label = qnn_predict(pixels, logits);
        if (fwrite(logits, sizeof(float), QNN_CLASSES, out) != QNN_CLASSES ||
                fwrite(&label, sizeof label, 1, out) != 1) {
            perror("run_images");
            return 1;
        }
        ++images;
    }
    if (ferror(in) || fclose(out) != 0) {
        perror("run_images");
        return 1;
    }
    fprintf(stderr, "run_images: %ld images\n", images);
    return 0;
}
