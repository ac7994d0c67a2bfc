// A hot JavaScript function called from another JavaScript function, for tests/jit.rs.
// Usage: node --perf-basic-prof jit_hot.js MILLISECONDS
//
// hotLeaf's loop is long enough that V8 compiles it on the stack (on-stack replacement), so
// hotLeaf runs as JIT code in a frame of its own; jsCaller calls it a few times per call.
function hotLeaf(n) {
  let s = 0;
  for (let i = 0; i < n; i++) s = (s + i * i) % 1000003;
  return s;
}

function jsCaller(rounds) {
  let t = 0;
  for (let r = 0; r < rounds; r++) t += hotLeaf(100000);
  return t;
}

const end = Date.now() + Number(process.argv[2] || 3000);
let acc = 0;
while (Date.now() < end) acc += jsCaller(20);
console.log(acc);
