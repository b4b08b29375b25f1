"""Does onnxruntime thread spinning matter? fp32 MiniLM, spinning on vs off, best of 3 alternating.

    python bench/spin_check.py      (reads ../shared/data; prints texts/s for STS sentences and SciFact docs)
"""
import time, numpy as np, onnxruntime as ort
from engine import Embedder
import engine.runtime as rt
sents=[l.split('\t')[5] for l in open('../shared/data/stsb/sts-dev.csv', encoding='utf-8') if len(l.split('\t'))>=7][:1500]
import json
docs=[]
for line in open('../shared/data/scifact/corpus.jsonl'):
    d=json.loads(line); docs.append(d['title']+' '+d['text'])
    if len(docs)>=100: break
a=Embedder(); b=Embedder()
so=ort.SessionOptions()
# rebuild b's session with spinning off
orig=ort.SessionOptions
class Opt(orig):
    def __init__(s):
        super().__init__(); s.add_session_config_entry("session.intra_op.allow_spinning","0")
ort.SessionOptions=Opt
b._session=rt.Session(b._exported.onnx_path)
ort.SessionOptions=orig
for name,t in (("sents",sents),("docs",docs)):
    best={"spin":1e9,"nospin":1e9}
    a.encode(t[:64]); b.encode(t[:64])
    for r in range(3):
        for k,e in (("spin",a),("nospin",b)) if r%2==0 else (("nospin",b),("spin",a)):
            t0=time.perf_counter(); e.encode(t); best[k]=min(best[k],time.perf_counter()-t0)
    print(name, {k: round(len(t)/v,1) for k,v in best.items()})
