"""Rows of the Cassandra store: the driver's named tuples, their class made once per set of columns."""

from __future__ import annotations

from cassandra.query import named_tuple_factory

from eskit.stores.cassandra.session import rows_as_named_tuples


def test_rows_are_named_as_the_drivers_and_share_one_class_per_set_of_columns() -> None:
    refused = rows_as_named_tuples(["[applied]", "head"], [(False, 3)])
    applied = rows_as_named_tuples(["[applied]", "head"], [(True, 4)])
    assert type(refused[0]) is type(applied[0])  # the driver's own factory makes a class per response
    assert refused[0].applied is False and refused[0].head == 3 and applied[0][0] is True
    assert refused[0]._fields == named_tuple_factory(["[applied]", "head"], [(False, 3)])[0]._fields
    other = rows_as_named_tuples(["position"], [(1,), (2,)])
    assert [row.position for row in other] == [1, 2] and type(other[0]) is not type(refused[0])
