//! The opcodes of pickle protocols 0 to 5, by pickletools' names, so that the machine
//! dispatches on names and refusals say what they refused.

use super::PickleError;

/// Declares [`Opcode`] from one table of `Variant = byte, "PICKLETOOLS_NAME"`.
macro_rules! opcodes {
    ($($variant:ident = $code:expr, $name:literal;)*) => {
        /// A pickle opcode; its discriminant is its byte.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u8)]
        pub(super) enum Opcode {
            $(
                #[doc = $name]
                $variant = $code,
            )*
        }

        impl Opcode {
            /// The opcode a byte encodes, if any.
            fn from_byte(code: u8) -> Option<Opcode> {
                match code {
                    $($code => Some(Opcode::$variant),)*
                    _ => None,
                }
            }

            /// pickletools' name.
            pub fn name(self) -> &'static str {
                match self {
                    $(Opcode::$variant => $name,)*
                }
            }
        }
    };
}

opcodes! {
    Mark = b'(', "MARK";
    Stop = b'.', "STOP";
    Pop = b'0', "POP";
    PopMark = b'1', "POP_MARK";
    Dup = b'2', "DUP";
    Float = b'F', "FLOAT";
    Int = b'I', "INT";
    BinInt = b'J', "BININT";
    BinInt1 = b'K', "BININT1";
    Long = b'L', "LONG";
    BinInt2 = b'M', "BININT2";
    None = b'N', "NONE";
    PersId = b'P', "PERSID";
    BinPersId = b'Q', "BINPERSID";
    Reduce = b'R', "REDUCE";
    String = b'S', "STRING";
    BinString = b'T', "BINSTRING";
    ShortBinString = b'U', "SHORT_BINSTRING";
    Unicode = b'V', "UNICODE";
    BinUnicode = b'X', "BINUNICODE";
    Append = b'a', "APPEND";
    Build = b'b', "BUILD";
    Global = b'c', "GLOBAL";
    Dict = b'd', "DICT";
    EmptyDict = b'}', "EMPTY_DICT";
    Appends = b'e', "APPENDS";
    Get = b'g', "GET";
    BinGet = b'h', "BINGET";
    Inst = b'i', "INST";
    LongBinGet = b'j', "LONG_BINGET";
    List = b'l', "LIST";
    EmptyList = b']', "EMPTY_LIST";
    Obj = b'o', "OBJ";
    Put = b'p', "PUT";
    BinPut = b'q', "BINPUT";
    LongBinPut = b'r', "LONG_BINPUT";
    SetItem = b's', "SETITEM";
    Tuple = b't', "TUPLE";
    EmptyTuple = b')', "EMPTY_TUPLE";
    SetItems = b'u', "SETITEMS";
    BinFloat = b'G', "BINFLOAT";
    BinBytes = b'B', "BINBYTES";
    ShortBinBytes = b'C', "SHORT_BINBYTES";
    Proto = 0x80, "PROTO";
    NewObj = 0x81, "NEWOBJ";
    Ext1 = 0x82, "EXT1";
    Ext2 = 0x83, "EXT2";
    Ext4 = 0x84, "EXT4";
    Tuple1 = 0x85, "TUPLE1";
    Tuple2 = 0x86, "TUPLE2";
    Tuple3 = 0x87, "TUPLE3";
    NewTrue = 0x88, "NEWTRUE";
    NewFalse = 0x89, "NEWFALSE";
    Long1 = 0x8a, "LONG1";
    Long4 = 0x8b, "LONG4";
    ShortBinUnicode = 0x8c, "SHORT_BINUNICODE";
    BinUnicode8 = 0x8d, "BINUNICODE8";
    BinBytes8 = 0x8e, "BINBYTES8";
    EmptySet = 0x8f, "EMPTY_SET";
    AddItems = 0x90, "ADDITEMS";
    FrozenSet = 0x91, "FROZENSET";
    NewObjEx = 0x92, "NEWOBJ_EX";
    StackGlobal = 0x93, "STACK_GLOBAL";
    Memoize = 0x94, "MEMOIZE";
    Frame = 0x95, "FRAME";
    ByteArray8 = 0x96, "BYTEARRAY8";
    NextBuffer = 0x97, "NEXT_BUFFER";
    ReadonlyBuffer = 0x98, "READONLY_BUFFER";
}

impl Opcode {
    /// The opcode at `offset`, or an error naming a byte that is no opcode.
    pub fn decode(code: u8, offset: usize) -> Result<Opcode, PickleError> {
        Opcode::from_byte(code).ok_or(PickleError::Opcode { name: "an unknown opcode", code, offset })
    }

    /// The error refusing this opcode at `offset`.
    pub fn refused(self, offset: usize) -> PickleError {
        PickleError::Opcode { name: self.name(), code: self as u8, offset }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips_or_is_unknown() {
        let mut known = 0;
        for code in 0..=255u8 {
            match Opcode::decode(code, 7) {
                Ok(op) => {
                    assert_eq!(op as u8, code);
                    known += 1;
                }
                Err(e) => assert_eq!(e, PickleError::Opcode { name: "an unknown opcode", code, offset: 7 }),
            }
        }
        assert_eq!(known, 68);
    }
}
