//! Subcommand arguments that clap builds only when their subcommand runs.

use clap::{ArgMatches, Args, Command, Error, FromArgMatches, Id};

/// `T`'s arguments, added to their subcommand only when clap parses or
/// shows that subcommand ([`Command::defer`]). Every start of `rcfs`
/// otherwise builds the arguments of every subcommand (half a millisecond
/// for `mount` and `run` alone, on every mount and container start).
#[derive(Debug)]
pub struct Deferred<T>(pub T);

impl<T: Args> Args for Deferred<T> {
    fn group_id() -> Option<Id> {
        T::group_id()
    }
    fn augment_args(cmd: Command) -> Command {
        cmd.defer(T::augment_args)
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        cmd.defer(T::augment_args_for_update)
    }
}

impl<T: FromArgMatches> FromArgMatches for Deferred<T> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, Error> {
        T::from_arg_matches(m).map(Deferred)
    }
    fn from_arg_matches_mut(m: &mut ArgMatches) -> Result<Self, Error> {
        T::from_arg_matches_mut(m).map(Deferred)
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), Error> {
        self.0.update_from_arg_matches(m)
    }
    fn update_from_arg_matches_mut(&mut self, m: &mut ArgMatches) -> Result<(), Error> {
        self.0.update_from_arg_matches_mut(m)
    }
}
