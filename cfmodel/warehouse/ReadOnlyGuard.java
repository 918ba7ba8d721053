package cfrec;

import java.util.Set;

import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.plans.logical.Command;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;

import scala.Function1;
import scala.runtime.BoxedUnit;

/**
 * A Spark SQL extension (spark.sql.extensions=cfrec.ReadOnlyGuard) that makes a session read-only:
 * queries run, and so do the commands that only read the catalog (SHOW, DESCRIBE, EXPLAIN, SET,
 * USE, REFRESH, CACHE); every other command (INSERT, CREATE, DROP, ALTER, TRUNCATE, LOAD DATA,
 * ADD JAR, CREATE FUNCTION, ...) is refused before it runs. The analysts' SQL endpoint loads it, so
 * that no SQL client can overwrite or delete the files the nightly job published. A command not
 * listed here is refused: a new kind of command is refused until it is known to only read.
 */
public final class ReadOnlyGuard implements Function1<SparkSessionExtensions, BoxedUnit> {
    static final Set<String> READING_COMMANDS = Set.of(
            // SHOW ...
            "ShowTables", "ShowTablesCommand", "ShowTablesExtended", "ShowViews", "ShowViewsCommand",
            "ShowColumns", "ShowColumnsCommand", "ShowPartitions", "ShowPartitionsCommand",
            "ShowTablePartition", "ShowFunctions", "ShowFunctionsCommand", "ShowCreateTable",
            "ShowCreateTableCommand", "ShowCreateTableAsSerdeCommand", "ShowTableProperties",
            "ShowTablePropertiesCommand", "ShowNamespaces", "ShowNamespacesCommand", "ShowCatalogs",
            "ShowCatalogsCommand", "ShowCurrentNamespace", "ShowCurrentNamespaceCommand",
            // DESCRIBE ...
            "DescribeRelation", "DescribeTableCommand", "DescribeColumn", "DescribeColumnCommand",
            "DescribeNamespace", "DescribeDatabaseCommand", "DescribeFunction", "DescribeFunctionCommand",
            "DescribeQueryCommand", "DescribeTablePartition",
            // session state only
            "ExplainCommand", "SetCommand", "ResetCommand", "SetCatalogAndNamespace", "SetNamespaceCommand",
            "SetCatalogCommand", "RefreshTable", "RefreshTableCommand", "RefreshResource", "RefreshFunction",
            "RefreshFunctionCommand", "CacheTable", "CacheTableCommand", "CacheTableAsSelect",
            "UncacheTable", "UncacheTableCommand", "ClearCacheCommand");

    @Override
    public BoxedUnit apply(SparkSessionExtensions extensions) {
        Function1<LogicalPlan, BoxedUnit> check = plan -> {
            refuseWrites(plan);
            return BoxedUnit.UNIT;
        };
        extensions.injectCheckRule(session -> check);
        return BoxedUnit.UNIT;
    }

    static void refuseWrites(LogicalPlan plan) {
        if (plan instanceof Command && !READING_COMMANDS.contains(plan.getClass().getSimpleName())) {
            throw new SecurityException("cfrec's SQL endpoint is read-only: "
                    + plan.getClass().getSimpleName() + " refused (only queries, SHOW, DESCRIBE, EXPLAIN, SET and USE run)");
        }
        scala.collection.Iterator<LogicalPlan> children = plan.children().iterator();
        while (children.hasNext()) {
            refuseWrites(children.next());
        }
    }
}
