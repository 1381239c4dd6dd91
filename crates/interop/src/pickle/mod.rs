//! A restricted unpickler for the `data.pkl` of a `torch.save(model.state_dict())` archive.
//!
//! Python's unpickler runs whatever callable a pickle names, which is why loading an untrusted
//! `.pth` file with `torch.load` can run arbitrary code. This one executes nothing: it is a stack
//! machine over plain data that knows exactly three kinds of global, by name, and evaluates them
//! itself:
//! - `collections.OrderedDict` (called with no arguments: an empty dict),
//! - `torch._utils._rebuild_tensor_v2` (its arguments become a [`TensorRef`]),
//! - `torch.FloatStorage`, `DoubleStorage`, `HalfStorage`, `BFloat16Storage`, `LongStorage`,
//!   `IntStorage` (only as the type inside a persistent id `('storage', type, key, location,
//!   numel)`, which becomes a [`StorageRef`] to the archive entry `data/<key>`).
//!
//! Any other global, and any opcode outside the ones protocols 2 and 4 use for such a pickle,
//! is refused with an error naming it. Work and memory stay proportional to the input: nesting
//! is limited and copies out of the memo are counted against a budget.

mod opcode;

use crate::elem::Elem;
use opcode::Opcode;

/// Containers nest at most this deep (a state dict needs 3: dict, tuple, tuple).
const MAX_DEPTH: usize = 16;

/// A storage the pickle refers to: the archive entry `data/<key>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StorageRef {
    /// Element type (from the storage class).
    pub elem: Elem,
    /// Entry name under `data/`.
    pub key: String,
    /// Elements in the storage.
    pub numel: u64,
}

/// A tensor view of a storage, as `_rebuild_tensor_v2(storage, offset, size, stride, ...)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TensorRef {
    /// The storage.
    pub storage: StorageRef,
    /// First element, in elements.
    pub offset: u64,
    /// Shape.
    pub shape: Vec<u64>,
    /// Strides, in elements.
    pub stride: Vec<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    Storage(Elem),
}

/// A tuple or dict with its nesting depth and size kept up to date, so limits cost O(1).
#[derive(Clone, Debug, Default)]
struct Items {
    values: Vec<Value>,
    depth: usize,
    nodes: usize,
}

impl Items {
    fn push(&mut self, v: Value) {
        self.depth = self.depth.max(1 + v.depth());
        self.nodes += v.nodes();
        self.values.push(v);
    }
}

#[derive(Clone, Debug)]
enum Value {
    None,
    /// `requires_grad` is the only bool a state dict holds, and its value does not matter here.
    Bool,
    Int(i64),
    Str(String),
    Tuple(Items),
    /// Keys and values alternate.
    Dict(Items),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
}

impl Value {
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(i) | Value::Dict(i) => i.depth,
            Value::Tensor(_) => 1,
            _ => 0,
        }
    }
    /// Cost of a copy, in rough units of one small value.
    fn nodes(&self) -> usize {
        match self {
            Value::Tuple(i) | Value::Dict(i) => 1 + i.nodes,
            Value::Str(s) => 1 + s.len() / 16,
            Value::Tensor(t) => 2 + t.shape.len() + t.storage.key.len() / 16,
            _ => 1,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool => "a bool",
            Value::Int(_) => "an int",
            Value::Str(_) => "a string",
            Value::Tuple(_) => "a tuple",
            Value::Dict(_) => "a dict",
            Value::Global(_) => "a class or function",
            Value::Storage(_) => "a storage",
            Value::Tensor(_) => "a tensor",
        }
    }
}

/// Why unpickling stopped; the caller adds the file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PickleError {
    /// An opcode outside the allow-list.
    Opcode { name: &'static str, code: u8, offset: usize },
    /// A global outside the allow-list.
    Global { module: String, name: String, offset: usize },
    /// Malformed, or an allowed construct used in a way a state dict never does.
    Bad { offset: usize, reason: String },
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being run (for errors).
    op_at: usize,
    stack: Vec<Value>,
    /// Stack heights at each open MARK.
    marks: Vec<usize>,
    memo: std::collections::HashMap<u32, Value>,
    /// Copies into and out of the memo still allowed, in [`Value::nodes`] units.
    budget: usize,
}

type Res<T> = Result<T, PickleError>;

impl<'a> Machine<'a> {
    fn bad<T>(&self, reason: impl Into<String>) -> Res<T> {
        Err(PickleError::Bad { offset: self.op_at, reason: reason.into() })
    }

    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        match self.pos.checked_add(n).filter(|&end| end <= self.data.len()) {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => self.bad("the pickle ends inside an opcode's argument"),
        }
    }
    fn u8(&mut self) -> Res<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Res<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Res<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn utf8(&mut self, n: usize) -> Res<String> {
        let bytes = self.take(n)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => self.bad("a string that is not UTF-8"),
        }
    }
    fn line(&mut self) -> Res<String> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().take(256).position(|&b| b == b'\n') else {
            return self.bad("a GLOBAL name longer than 256 bytes or without its newline");
        };
        let s = self.utf8(n)?;
        self.pos += 1;
        Ok(s)
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }
    fn pop(&mut self) -> Res<Value> {
        // Values below the innermost MARK belong to an enclosing construct.
        if self.stack.len() <= self.marks.last().copied().unwrap_or(0) {
            return self.bad("the stack is empty");
        }
        Ok(self.stack.pop().expect("checked non-empty"))
    }
    fn pop_mark(&mut self) -> Res<Vec<Value>> {
        match self.marks.pop() {
            Some(k) => Ok(self.stack.split_off(k)),
            None => self.bad("no MARK to close"),
        }
    }
    fn collect(&self, values: Vec<Value>) -> Res<Items> {
        let mut items = Items::default();
        for v in values {
            items.push(v);
        }
        if items.depth > MAX_DEPTH {
            return self.bad(format!("containers nested deeper than {MAX_DEPTH}"));
        }
        Ok(items)
    }
    fn tuple(&mut self, values: Vec<Value>) -> Res<()> {
        let items = self.collect(values)?;
        self.push(Value::Tuple(items));
        Ok(())
    }
    fn charge(&mut self, v: &Value) -> Res<()> {
        match self.budget.checked_sub(v.nodes()) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => self.bad("memo copies exceed what a state dict of this size needs"),
        }
    }
    fn memo_put(&mut self, index: u32) -> Res<()> {
        let Some(top) = self.stack.last() else { return self.bad("memoize with an empty stack") };
        let v = top.clone();
        self.charge(&v)?;
        self.memo.insert(index, v);
        Ok(())
    }
    fn memo_get(&mut self, index: u32) -> Res<()> {
        let Some(v) = self.memo.get(&index).cloned() else {
            return self.bad(format!("memo entry {index} was never stored"));
        };
        self.charge(&v)?;
        self.push(v);
        Ok(())
    }
    fn set_items(&mut self, pairs: Vec<Value>) -> Res<()> {
        if !pairs.len().is_multiple_of(2) {
            return self.bad("SETITEMS with an odd number of keys and values");
        }
        let at = self.op_at;
        let Some(Value::Dict(items)) = self.stack.last_mut() else {
            return Err(PickleError::Bad { offset: at, reason: "items set on something that is not a dict".into() });
        };
        for v in pairs {
            items.push(v);
        }
        if items.depth > MAX_DEPTH {
            return self.bad(format!("containers nested deeper than {MAX_DEPTH}"));
        }
        Ok(())
    }

    fn global(&self, module: &str, name: &str) -> Res<Value> {
        let g = match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch", "FloatStorage") => Global::Storage(Elem::F32),
            ("torch", "DoubleStorage") => Global::Storage(Elem::F64),
            ("torch", "HalfStorage") => Global::Storage(Elem::F16),
            ("torch", "BFloat16Storage") => Global::Storage(Elem::BF16),
            ("torch", "LongStorage") => Global::Storage(Elem::I64),
            ("torch", "IntStorage") => Global::Storage(Elem::I32),
            _ => {
                return Err(PickleError::Global {
                    module: module.to_string(),
                    name: name.to_string(),
                    offset: self.op_at,
                })
            }
        };
        Ok(Value::Global(g))
    }

    /// `('storage', StorageType, key, location, numel)`: torch's persistent id of a storage.
    fn persistent(&self, pid: Value) -> Res<Value> {
        let Value::Tuple(items) = pid else { return self.bad(format!("a persistent id that is {}", pid.kind())) };
        match items.values.as_slice() {
            [Value::Str(tag), Value::Global(Global::Storage(elem)), Value::Str(key), Value::Str(_location), Value::Int(numel)]
                if tag == "storage" && *numel >= 0 =>
            {
                // The key becomes part of an archive entry name: digits and letters only.
                if key.is_empty() || key.len() > 32 || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return self.bad(format!("storage key {key:?} is not a plain name"));
                }
                Ok(Value::Storage(StorageRef { elem: *elem, key: key.clone(), numel: *numel as u64 }))
            }
            _ => self.bad("a persistent id other than ('storage', <storage type>, key, location, numel)"),
        }
    }

    fn ints(&self, v: &Value, what: &str) -> Res<Vec<u64>> {
        let Value::Tuple(items) = v else { return self.bad(format!("tensor {what} is {}, not a tuple", v.kind())) };
        items
            .values
            .iter()
            .map(|x| match x {
                Value::Int(i) if *i >= 0 => Ok(*i as u64),
                other => self.bad(format!("tensor {what} holds {}, not a non-negative int", other.kind())),
            })
            .collect()
    }

    fn reduce(&self, callable: Value, args: Value) -> Res<Value> {
        let Value::Tuple(args) = args else { return self.bad(format!("call arguments are {}", args.kind())) };
        match callable {
            Value::Global(Global::OrderedDict) if args.values.is_empty() => Ok(Value::Dict(Items::default())),
            Value::Global(Global::RebuildTensorV2) => match args.values.as_slice() {
                [Value::Storage(s), Value::Int(offset), size, stride, Value::Bool, Value::Dict(hooks)]
                    if *offset >= 0 =>
                {
                    if !hooks.values.is_empty() {
                        return self.bad("a tensor with backward hooks");
                    }
                    let (shape, stride) = (self.ints(size, "size")?, self.ints(stride, "stride")?);
                    if shape.len() != stride.len() {
                        return self.bad(format!("tensor size {shape:?} and stride {stride:?} differ in rank"));
                    }
                    Ok(Value::Tensor(TensorRef { storage: s.clone(), offset: *offset as u64, shape, stride }))
                }
                _ => self.bad(
                    "_rebuild_tensor_v2 called with other arguments than (storage, offset, size, stride, \
                     requires_grad, hooks)",
                ),
            },
            Value::Global(g) => self.bad(format!("{g:?} called with {} argument(s)", args.values.len())),
            other => self.bad(format!("a call of {}", other.kind())),
        }
    }

    /// Runs the opcodes up to STOP and returns the value it pops.
    fn run(mut self) -> Res<Value> {
        loop {
            self.op_at = self.pos;
            let Some(&code) = self.data.get(self.pos) else { return self.bad("the pickle ends without STOP") };
            self.pos += 1;
            if let Some(top) = self.step(Opcode::decode(code, self.op_at)?)? {
                return Ok(top);
            }
        }
    }

    /// Runs one opcode; returns the top of the stack at STOP.
    fn step(&mut self, op: Opcode) -> Res<Option<Value>> {
        match op {
            Opcode::Proto => {
                let proto = self.u8()?;
                if proto > 5 {
                    return self.bad(format!("pickle protocol {proto}"));
                }
            }
            Opcode::Frame => {
                self.take(8)?; // a length hint only
            }
            Opcode::Stop => return self.pop().map(Some),
            Opcode::Mark => self.marks.push(self.stack.len()),
            Opcode::EmptyDict => self.push(Value::Dict(Items::default())),
            Opcode::EmptyTuple => self.push(Value::Tuple(Items::default())),
            Opcode::NewTrue | Opcode::NewFalse => self.push(Value::Bool),
            Opcode::None => self.push(Value::None),
            Opcode::BinInt | Opcode::BinInt1 | Opcode::BinInt2 | Opcode::Long1 => {
                let v = self.int(op)?;
                self.push(Value::Int(v));
            }
            Opcode::BinUnicode | Opcode::ShortBinUnicode => {
                let n = if op == Opcode::BinUnicode { self.u32()? as usize } else { usize::from(self.u8()?) };
                let s = self.utf8(n)?;
                self.push(Value::Str(s));
            }
            Opcode::Tuple | Opcode::Tuple1 | Opcode::Tuple2 | Opcode::Tuple3 => self.tuple_op(op)?,
            Opcode::BinPut | Opcode::LongBinPut | Opcode::Memoize => {
                let index = self.memo_index(op)?;
                self.memo_put(index)?;
            }
            Opcode::BinGet | Opcode::LongBinGet => {
                let index = self.memo_index(op)?;
                self.memo_get(index)?;
            }
            Opcode::Global | Opcode::StackGlobal => {
                let g = self.global_op(op)?;
                self.push(g);
            }
            Opcode::SetItem => {
                let (value, key) = (self.pop()?, self.pop()?);
                self.set_items(vec![key, value])?;
            }
            Opcode::SetItems => {
                let pairs = self.pop_mark()?;
                self.set_items(pairs)?;
            }
            Opcode::BinPersId => {
                let pid = self.pop()?;
                let storage = self.persistent(pid)?;
                self.push(storage);
            }
            Opcode::Reduce => {
                let (args, callable) = (self.pop()?, self.pop()?);
                let v = self.reduce(callable, args)?;
                self.push(v);
            }
            Opcode::Build => self.build()?,
            other => return Err(other.refused(self.op_at)),
        }
        Ok(None)
    }

    /// The argument of BININT (4 bytes, signed), BININT1 (1 byte), BININT2 (2 bytes) or LONG1
    /// (a length byte, then that many bytes).
    fn int(&mut self, op: Opcode) -> Res<i64> {
        Ok(match op {
            Opcode::BinInt => i64::from(self.u32()? as i32),
            Opcode::BinInt1 => i64::from(self.u8()?),
            Opcode::BinInt2 => i64::from(self.u16()?),
            _ => {
                let n = usize::from(self.u8()?);
                if n > 8 {
                    return self.bad(format!("a {n}-byte integer"));
                }
                let bytes = self.take(n)?;
                // Little-endian two's complement, sign-extended from its top byte.
                let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) { 0xff } else { 0 };
                let mut buf = [fill; 8];
                buf[..n].copy_from_slice(bytes);
                i64::from_le_bytes(buf)
            }
        })
    }

    /// TUPLE (the values above the innermost MARK) or TUPLE1 to TUPLE3 (the top 1 to 3 values).
    fn tuple_op(&mut self, op: Opcode) -> Res<()> {
        let values = match op {
            Opcode::Tuple => self.pop_mark()?,
            _ => {
                let n = match op {
                    Opcode::Tuple1 => 1,
                    Opcode::Tuple2 => 2,
                    _ => 3,
                };
                let mut values = Vec::with_capacity(n);
                for _ in 0..n {
                    values.push(self.pop()?);
                }
                values.reverse();
                values
            }
        };
        self.tuple(values)
    }

    /// The memo index of BINPUT and BINGET (1 byte), LONG_BINPUT and LONG_BINGET (4 bytes), or
    /// MEMOIZE (the next free one).
    fn memo_index(&mut self, op: Opcode) -> Res<u32> {
        Ok(match op {
            Opcode::BinPut | Opcode::BinGet => u32::from(self.u8()?),
            Opcode::LongBinPut | Opcode::LongBinGet => self.u32()?,
            _ => u32::try_from(self.memo.len()).expect("memo smaller than the pickle"),
        })
    }

    /// GLOBAL (module and name on two lines) or STACK_GLOBAL (module and name popped).
    fn global_op(&mut self, op: Opcode) -> Res<Value> {
        let (module, name) = if op == Opcode::Global {
            (self.line()?, self.line()?)
        } else {
            let (name, module) = (self.pop()?, self.pop()?);
            let (Value::Str(module), Value::Str(name)) = (module, name) else {
                return self.bad("STACK_GLOBAL on values that are not strings");
            };
            (module, name)
        };
        self.global(&module, &name)
    }

    /// BUILD: an OrderedDict's state, `{'_metadata': {...}}` (BN versions); attributes only, so
    /// it is checked and dropped.
    fn build(&mut self) -> Res<()> {
        let state = self.pop()?;
        match (self.stack.last(), &state) {
            (Some(Value::Dict(_)), Value::Dict(_) | Value::None) => Ok(()),
            _ => self.bad(format!("BUILD of {} on something that is not a dict", state.kind())),
        }
    }
}

/// Runs the restricted machine over `data.pkl` and returns the state dict's `(key, tensor)`
/// entries in order, or `Err(Ok(description))` when the pickle is fine but not a flat mapping
/// of names to tensors.
pub(crate) fn load_state_dict(data: &[u8]) -> Result<Result<Vec<(String, TensorRef)>, String>, PickleError> {
    let machine = Machine {
        data,
        pos: 0,
        op_at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Default::default(),
        budget: data.len().saturating_mul(8).saturating_add(4096),
    };
    let top = machine.run()?;
    let Value::Dict(items) = top else { return Ok(Err(format!("the pickle holds {}, not a dict", top.kind()))) };
    let mut out = Vec::with_capacity(items.values.len() / 2);
    let mut it = items.values.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        match (k, v) {
            (Value::Str(k), Value::Tensor(t)) => out.push((k, t)),
            (Value::Str(k), v) => {
                return Ok(Err(format!(
                    "the value of '{k}' is {} (a training checkpoint? save model.state_dict() alone)",
                    v.kind()
                )))
            }
            (k, _) => return Ok(Err(format!("a key that is {}, not a string", k.kind()))),
        }
    }
    Ok(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p: &[u8]) -> Result<Result<Vec<(String, TensorRef)>, String>, PickleError> {
        load_state_dict(p)
    }

    #[test]
    fn code_execution_globals_are_refused() {
        // What `pickle.dumps` writes for `os.system('echo hi')` through __reduce__.
        let p = b"\x80\x02cos\nsystem\nq\x00X\x07\x00\x00\x00echo hiq\x01\x85q\x02Rq\x03.";
        assert_eq!(run(p).unwrap_err(), PickleError::Global { module: "os".into(), name: "system".into(), offset: 2 });
        let p = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.";
        assert!(matches!(run(p).unwrap_err(), PickleError::Global { ref name, .. } if name == "eval"));
        // A storage class is allowed only inside a persistent id, never called.
        let p = b"\x80\x02ctorch\nFloatStorage\n)R.";
        assert!(matches!(run(p).unwrap_err(), PickleError::Bad { .. }));
    }

    #[test]
    fn object_building_opcodes_are_refused() {
        for (p, name) in [
            (&b"\x80\x02(ios\nsystem\nS'x'\n."[..], "INST"),
            (b"\x80\x02]q\x00.", "EMPTY_LIST"),
            (b"\x80\x02G?\xf0\x00\x00\x00\x00\x00\x00.", "BINFLOAT"),
            (b"\x80\x02\x82\x01.", "EXT1"),
            (b"\x80\x02(o.", "OBJ"),
        ] {
            match run(p).unwrap_err() {
                PickleError::Opcode { name: n, .. } => assert_eq!(n, name),
                e => panic!("{name}: {e:?}"),
            }
        }
    }

    #[test]
    fn deep_nesting_and_memo_blowup_stop_early() {
        let mut p = b"\x80\x02)".to_vec();
        p.extend(std::iter::repeat_n(0x85u8, 100)); // TUPLE1 x 100
        p.push(b'.');
        assert!(matches!(run(&p).unwrap_err(), PickleError::Bad { ref reason, .. } if reason.contains("nested")));
        // A dict memoised and copied back over and over would cost far more than its bytes.
        let mut p = b"\x80\x02}q\x00(".to_vec();
        for i in 0..200u8 {
            p.extend([b'K', i, b'K', i]);
        }
        p.extend(b"uq\x00");
        p.extend(std::iter::repeat_n(*b"h\x00", 2000).flatten());
        p.push(b'.');
        assert!(matches!(run(&p).unwrap_err(), PickleError::Bad { ref reason, .. } if reason.contains("memo")));
    }

    #[test]
    fn a_plain_state_dict_loads() {
        // Protocol 2, as torch.save writes it (pickletools listing in the crate's fixtures).
        let p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00wq\x02ctorch._utils\n_rebuild_tensor_v2\nq\x03((X\x07\x00\x00\x00storageq\x04ctorch\nFloatStorage\nq\x05X\x01\x00\x00\x000q\x06X\x03\x00\x00\x00cpuq\x07K\x06tq\x08QK\x00K\x02K\x03\x86q\tK\x03K\x01\x86q\n\x89h\x00)Rq\x0btq\x0cRq\ru}q\x0eb.";
        let sd = run(p).unwrap().unwrap();
        assert_eq!(sd.len(), 1);
        let (k, t) = &sd[0];
        assert_eq!(k, "w");
        assert_eq!((t.shape.as_slice(), t.stride.as_slice(), t.offset), (&[2, 3][..], &[3, 1][..], 0));
        assert_eq!(t.storage, StorageRef { elem: Elem::F32, key: "0".into(), numel: 6 });
    }

    #[test]
    fn non_tensor_values_are_reported() {
        let p = b"\x80\x02}q\x00(X\x05\x00\x00\x00epochK\x03u.";
        let msg = run(p).unwrap().unwrap_err();
        assert!(msg.contains("'epoch' is an int"), "{msg}");
    }
}
