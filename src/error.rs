//! One error type for the whole program: what went wrong, said in one line, and the exit code it earns.
use std::fmt;
use std::process::ExitCode;

#[derive(Debug)]
pub enum Error {
    /// The command line asked for something impossible (exit 2).
    Usage(String),
    /// The machine or kernel could not do what was asked (exit 1).
    Runtime(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    pub fn runtime(msg: impl Into<String>) -> Self {
        Error::Runtime(msg.into())
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) => ExitCode::from(2),
            Error::Runtime(_) => ExitCode::from(1),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) | Error::Runtime(msg) => f.write_str(msg),
        }
    }
}

/// Adds what tcpkit was doing to a library error, keeping the library's chain of causes on the same line.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::error::Error> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Runtime(format!("{}: {:#}", what(), DisplayChain(&e))))
    }
}

struct DisplayChain<'a, E>(&'a E);

impl<E: std::error::Error> fmt::Display for DisplayChain<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            let text = err.to_string();
            // libbpf-rs repeats the cause inside the context text; print each piece once.
            if !self.0.to_string().contains(&text) {
                write!(f, ": {text}")?;
            }
            source = err.source();
        }
        Ok(())
    }
}
