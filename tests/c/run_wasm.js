// Runs the WebAssembly module of wasm.c over a file of images:
//
//     node run_wasm.js MODEL.wasm IMAGES RECORDS
//
// IMAGES holds N images of the module's input size; RECORDS receives, for
// each, the bytes of its float32 logits as the module wrote them, then the
// returned class as a little-endian int32 (the records of run_images.c).
'use strict';
const fs = require('fs');

const [modulePath, imagesPath, recordsPath] = process.argv.slice(2);
const instance = new WebAssembly.Instance(
    new WebAssembly.Module(fs.readFileSync(modulePath)), {});
const model = instance.exports;
const size = model.input_size();
const classes = model.classes();
const images = fs.readFileSync(imagesPath);
const count = Math.floor(images.length / size);
const recordBytes = 4 * (classes + 1);
const records = Buffer.alloc(count * recordBytes);
for (let i = 0; i < count; i++) {
  const memory = model.memory.buffer;
  new Uint8Array(memory, model.pixels(), size).set(
      images.subarray(i * size, (i + 1) * size));
  const label = model.predict();
  // the logits' bytes, copied as they are (no conversion to a JS number)
  records.set(new Uint8Array(model.memory.buffer, model.logits(), 4 * classes),
              i * recordBytes);
  records.writeInt32LE(label, i * recordBytes + 4 * classes);
}
fs.writeFileSync(recordsPath, records);
process.stderr.write(`run_wasm.js: ${count} images\n`);
